"""Write ftlab's demo dataset: a recipe's title and ingredient lines -> its generic ingredients as a JSON list.

The dishes below are ftlab's own wording. Each line of a dish reads `<ingredient line> | <generic>[, <generic>]`;
the script turns every dish into one chat example in OpenAI's fine-tuning format, shuffles the dishes with a fixed
seed (7) and writes train.jsonl (100), val.jsonl (20) and test.jsonl (30). Running it twice gives the same bytes.

Normalisation rule (one rule, checked below where it can be checked mechanically):
  the generic name is the everyday name of the ingredient, lowercase and singular. Drop quantity, unit, size,
  packaging, brand, preparation and state (fresh, dried, ground, canned, frozen, chopped, melted, whipped), and
  qualifiers of variety, grade, cut or fat/salt level: "1 yellow onion, diced" -> onion, "russet potatoes" -> potato,
  "basmati rice" -> rice, "all-purpose flour" -> flour, "extra-virgin olive oil" -> olive oil, "kosher salt" -> salt,
  "boneless skinless chicken thighs" -> chicken, "heavy cream" -> cream, "black beans" -> bean, "spaghetti" -> pasta,
  "jalapeno" -> chile, "canola oil" -> vegetable oil. Keep a qualifier when it names a different ingredient:
  brown sugar, powdered sugar, green onion, sweet potato, green bean, sour cream, coconut milk, soy sauce,
  red wine vinegar, garlic powder. Parts map to the whole: egg yolk -> egg, lemon zest or juice -> lemon.
  Synonyms map to one name: scallion -> green onion, stock -> broth, coriander leaves -> cilantro,
  confectioners' sugar -> powdered sugar, prawns -> shrimp. Names used only in the plural stay plural
  (oats, breadcrumbs, red pepper flakes). A line naming two ingredients gives both ("salt and pepper" -> salt,
  pepper); a generic that repeats within a dish is listed once, at its first place.

Usage: python examples/recipes/make_recipes.py [--out DIR]   (DIR defaults to this script's folder)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SYSTEM_PROMPT = "You extract the generic ingredients from a recipe. Answer with a JSON list of lowercase strings only."
SEED = 7
SPLITS = {"train": 100, "val": 20, "test": 30}
PLURAL_ONLY = {"oats", "breadcrumbs", "red pepper flakes", "molasses", "lemongrass"}
# Words that the rule removes; none may survive in a generic name.
DROPPED_WORDS = {
    "fresh", "dried", "ground", "chopped", "minced", "diced", "sliced", "grated", "shredded", "melted", "whipped",
    "large", "small", "medium", "whole", "ripe", "canned", "frozen", "unsalted", "salted", "extra-virgin",
    "all-purpose", "granulated", "kosher", "boneless", "skinless", "low-sodium", "heavy", "plain", "greek",
    "yolk", "zest", "juice", "stock", "scallion", "confectioners", "peeled", "optional", "taste",
    "cup", "tbsp", "tsp", "oz", "lb", "g", "ml", "can",
}  # fmt: skip

DISHES = """
# Lemon Garlic Roast Chicken
1 whole chicken (about 4 lb) | chicken
2 lemons, halved | lemon
1 head garlic, cloves separated | garlic
3 tbsp butter, softened | butter
4 sprigs fresh thyme | thyme
2 sprigs rosemary | rosemary
1 tbsp kosher salt | salt
1 tsp freshly ground black pepper | pepper

# Spaghetti Carbonara
12 oz spaghetti | pasta
6 oz thick-cut bacon, diced | bacon
3 large eggs | egg
1 egg yolk | egg
1 cup finely grated Pecorino Romano | pecorino
1/2 cup grated Parmesan | parmesan
1 tsp coarsely ground black pepper | pepper
salt for the pasta water | salt

# Classic Lasagna
12 lasagna noodles | pasta
1 lb ground beef | beef
1/2 lb Italian sausage, casings removed | sausage
1 onion, diced | onion
3 cloves garlic, minced | garlic
1 (28 oz) can crushed tomatoes | tomato
2 tbsp tomato paste | tomato paste
15 oz ricotta cheese | ricotta
1 large egg | egg
3 cups shredded mozzarella | mozzarella
3/4 cup grated Parmesan | parmesan
1 tsp dried oregano | oregano

# Beef Tacos
1 lb lean ground beef | beef
1 tbsp chili powder | chili powder
1 tsp ground cumin | cumin
1/2 tsp garlic powder | garlic powder
8 small corn tortillas, warmed | tortilla
1 cup shredded iceberg lettuce | lettuce
1 cup shredded cheddar cheese | cheddar
1 tomato, diced | tomato
1/2 cup sour cream | sour cream
salt to taste | salt

# Chicken Enchiladas
2 cups shredded cooked chicken | chicken
1 (10 oz) can red enchilada sauce | enchilada sauce
8 flour tortillas (8 inch) | tortilla
2 cups shredded Monterey Jack cheese | monterey jack
1/2 onion, finely diced | onion
1 (4 oz) can diced green chiles | chile
1/4 cup chopped cilantro | cilantro
1/2 cup sour cream, for serving | sour cream

# Shrimp Scampi
1 lb large shrimp, peeled and deveined | shrimp
8 oz linguine | pasta
4 tbsp butter | butter
2 tbsp olive oil | olive oil
5 garlic cloves, thinly sliced | garlic
1/4 tsp red pepper flakes | red pepper flakes
1/2 cup dry white wine | white wine
juice of 1/2 lemon | lemon
2 tbsp chopped flat-leaf parsley | parsley
salt and pepper | salt, pepper

# Mushroom Risotto
1 1/2 cups Arborio rice | rice
1 lb cremini mushrooms, sliced | mushroom
1 shallot, minced | shallot
2 cloves garlic, minced | garlic
1/2 cup dry white wine | white wine
5 cups warm chicken stock | chicken broth
3 tbsp butter | butter
1/2 cup grated Parmigiano-Reggiano | parmesan
2 tbsp olive oil | olive oil
salt and pepper to taste | salt, pepper

# Beef Stew
2 lb beef chuck, cut into 1 1/2-inch cubes | beef
1/4 cup all-purpose flour | flour
3 tbsp vegetable oil | vegetable oil
1 large onion, chopped | onion
3 carrots, cut into chunks | carrot
1 lb Yukon Gold potatoes, quartered | potato
2 tbsp tomato paste | tomato paste
1 cup red wine | red wine
4 cups beef broth | beef broth
2 bay leaves | bay leaf
1 tsp dried thyme | thyme
salt and black pepper | salt, pepper

# Chili con Carne
2 lb ground beef | beef
1 large onion, diced | onion
1 green bell pepper, diced | bell pepper
4 cloves garlic, minced | garlic
3 tbsp chili powder | chili powder
2 tsp ground cumin | cumin
1 tsp dried oregano | oregano
1 (28 oz) can diced tomatoes | tomato
2 (15 oz) cans kidney beans, drained and rinsed | bean
1 cup beef broth | beef broth
1 tbsp vegetable oil | vegetable oil
salt to taste | salt

# Shepherd's Pie
1 1/2 lb ground lamb | lamb
1 onion, diced | onion
2 carrots, diced | carrot
1 cup frozen peas | pea
2 tbsp tomato paste | tomato paste
1 tbsp Worcestershire sauce | worcestershire sauce
1 cup beef broth | beef broth
2 lb russet potatoes, peeled | potato
4 tbsp butter | butter
1/2 cup whole milk | milk
salt and pepper to taste | salt, pepper

# Baked Salmon with Dill
4 salmon fillets (6 oz each), skin on | salmon
2 tbsp olive oil | olive oil
2 tbsp chopped fresh dill | dill
1 lemon, thinly sliced | lemon
2 garlic cloves, minced | garlic
1/2 tsp flaky sea salt | salt
black pepper to taste | pepper

# Fish Tacos
1 lb cod fillets | cod
1 tsp chili powder | chili powder
1/2 tsp ground cumin | cumin
8 corn tortillas | tortilla
2 cups shredded red cabbage | cabbage
1/2 cup mayonnaise | mayonnaise
1 tbsp sriracha | sriracha
2 limes, cut into wedges | lime
1/4 cup fresh cilantro leaves | cilantro
1 tbsp canola oil | vegetable oil

# Falafel
2 cups dried chickpeas, soaked overnight | chickpea
1 small onion, roughly chopped | onion
4 garlic cloves | garlic
1 cup packed fresh parsley | parsley
1/2 cup fresh cilantro | cilantro
2 tsp ground cumin | cumin
1 tsp ground coriander | coriander
1/2 tsp baking soda | baking soda
1 1/2 tsp salt | salt
vegetable oil for frying | vegetable oil

# Chicken Parmesan
2 boneless skinless chicken breasts, halved horizontally | chicken
1/2 cup all-purpose flour | flour
2 eggs, beaten | egg
1 cup panko breadcrumbs | breadcrumbs
1/2 cup grated Parmesan cheese | parmesan
1 1/2 cups marinara sauce | marinara sauce
1 cup shredded mozzarella | mozzarella
1/4 cup olive oil | olive oil
fresh basil, for garnish | basil

# Macaroni and Cheese
1 lb elbow macaroni | pasta
4 tbsp butter | butter
1/4 cup flour | flour
3 cups whole milk | milk
3 cups shredded sharp cheddar | cheddar
1 cup shredded Gruyere | gruyere
1 tsp Dijon mustard | mustard
1/4 tsp smoked paprika | paprika
salt to taste | salt

# Margherita Pizza
1 ball pizza dough (about 1 lb) | pizza dough
1/2 cup canned San Marzano tomatoes, crushed by hand | tomato
8 oz fresh mozzarella, torn | mozzarella
1 handful basil leaves | basil
1 tbsp extra-virgin olive oil | olive oil
1/2 tsp sea salt | salt

# Pulled Pork Sandwiches
4 lb bone-in pork shoulder | pork
2 tbsp brown sugar | brown sugar
1 tbsp smoked paprika | paprika
1 tsp garlic powder | garlic powder
1 tsp onion powder | onion powder
2 tsp kosher salt | salt
1 cup apple cider vinegar | apple cider vinegar
1 cup barbecue sauce | barbecue sauce
8 brioche buns | bread
2 cups coleslaw, for serving | coleslaw

# Stuffed Bell Peppers
4 large bell peppers, tops cut off and seeded | bell pepper
1 lb ground turkey | turkey
1 cup cooked long-grain rice | rice
1 (15 oz) can tomato sauce | tomato sauce
1/2 onion, chopped | onion
2 cloves garlic, minced | garlic
1 tsp Italian seasoning | italian seasoning
1 cup shredded mozzarella cheese | mozzarella
salt and pepper to taste | salt, pepper

# Eggplant Parmesan
2 medium eggplants, sliced 1/2 inch thick | eggplant
1 cup Italian-style breadcrumbs | breadcrumbs
2 large eggs | egg
3 cups marinara sauce | marinara sauce
2 cups shredded mozzarella | mozzarella
1 cup grated Parmesan | parmesan
olive oil for brushing | olive oil
1 tsp salt | salt

# Jambalaya
1 lb andouille sausage, sliced | sausage
1 lb boneless chicken thighs, cubed | chicken
1/2 lb shrimp, peeled | shrimp
1 onion, diced | onion
1 green bell pepper, diced | bell pepper
2 celery ribs, diced | celery
3 cloves garlic, minced | garlic
1 1/2 cups long-grain white rice | rice
1 (14.5 oz) can diced tomatoes | tomato
3 cups chicken broth | chicken broth
2 tsp Cajun seasoning | cajun seasoning
2 green onions, sliced | green onion

# Chicken Shawarma
2 lb boneless skinless chicken thighs | chicken
1/3 cup plain yogurt | yogurt
3 tbsp olive oil | olive oil
juice of 1 lemon | lemon
4 garlic cloves, grated | garlic
2 tsp ground cumin | cumin
2 tsp paprika | paprika
1 tsp ground turmeric | turmeric
1/2 tsp ground cinnamon | cinnamon
1 tsp salt | salt
4 pita breads, warmed | bread

# Ratatouille
1 eggplant, cubed | eggplant
2 zucchini, sliced into half-moons | zucchini
1 red bell pepper, chopped | bell pepper
1 yellow bell pepper, chopped | bell pepper
1 onion, sliced | onion
4 ripe tomatoes, chopped | tomato
4 garlic cloves, sliced | garlic
1/4 cup extra-virgin olive oil | olive oil
2 sprigs thyme | thyme
1 bay leaf | bay leaf
handful of basil leaves, torn | basil
salt and pepper | salt, pepper

# Tomato Basil Soup
2 tbsp olive oil | olive oil
1 yellow onion, diced | onion
3 cloves garlic, minced | garlic
2 (28 oz) cans whole peeled tomatoes | tomato
2 cups low-sodium vegetable broth | vegetable broth
1/2 cup heavy cream | cream
1 handful fresh basil leaves, torn | basil
1 tsp sugar | sugar
salt and pepper to taste | salt, pepper

# Chicken Noodle Soup
1 tbsp butter | butter
2 carrots, peeled and sliced | carrot
2 celery stalks, sliced | celery
1 onion, chopped | onion
8 cups chicken stock | chicken broth
2 cups cooked chicken, shredded | chicken
3 oz wide egg noodles | noodle
1 bay leaf | bay leaf
2 tbsp chopped fresh parsley | parsley
salt to taste | salt

# Red Lentil Soup
1 cup red lentils, rinsed | lentil
1 onion, finely chopped | onion
2 carrots, diced | carrot
2 garlic cloves, crushed | garlic
1 tsp ground cumin | cumin
1/2 tsp smoked paprika | paprika
6 cups vegetable broth | vegetable broth
juice of 1 lemon | lemon
2 tbsp olive oil | olive oil

# French Onion Soup
4 large yellow onions, thinly sliced | onion
3 tbsp unsalted butter | butter
1 tsp fresh thyme leaves | thyme
1/2 cup dry white wine | white wine
6 cups beef broth | beef broth
1 baguette, sliced and toasted | bread
2 cups shredded Gruyere | gruyere
salt and freshly ground black pepper | salt, pepper

# Butternut Squash Soup
1 medium butternut squash (about 3 lb), peeled and cubed | squash
1 apple, peeled and chopped | apple
1 onion, chopped | onion
4 cups vegetable broth | vegetable broth
1/2 tsp ground nutmeg | nutmeg
1/2 cup coconut milk | coconut milk
2 tbsp olive oil | olive oil
salt to taste | salt

# Minestrone
2 tbsp extra-virgin olive oil | olive oil
1 onion, diced | onion
2 carrots, diced | carrot
2 celery stalks, diced | celery
1 zucchini, diced | zucchini
3 garlic cloves, minced | garlic
1 (14 oz) can diced tomatoes | tomato
1 (15 oz) can cannellini beans, drained | bean
6 cups vegetable stock | vegetable broth
1 cup small pasta, such as ditalini | pasta
2 cups chopped kale | kale
Parmesan rind (optional) | parmesan

# Black Bean Soup
1 tbsp olive oil | olive oil
1 onion, chopped | onion
1 jalapeno, seeded and minced | chile
3 garlic cloves, minced | garlic
1 1/2 tsp ground cumin | cumin
2 (15 oz) cans black beans, rinsed | bean
3 cups vegetable broth | vegetable broth
1 lime, juiced | lime
sour cream and cilantro, to serve | sour cream, cilantro

# Potato Leek Soup
3 leeks, white and light green parts only, sliced | leek
2 tbsp butter | butter
1 1/2 lb Yukon Gold potatoes, peeled and diced | potato
4 cups chicken broth | chicken broth
1 cup whole milk | milk
1 bay leaf | bay leaf
2 tbsp snipped chives | chive
salt and white pepper to taste | salt, pepper

# Miso Soup with Tofu
4 cups dashi | dashi
3 tbsp white miso paste | miso
7 oz silken tofu, cubed | tofu
1 tbsp dried wakame seaweed | seaweed
2 green onions, thinly sliced | green onion

# Hot and Sour Soup
4 cups chicken broth | chicken broth
4 oz pork tenderloin, cut into thin strips | pork
6 dried shiitake mushrooms, soaked and sliced | mushroom
4 oz firm tofu, cut into strips | tofu
3 tbsp rice vinegar | rice vinegar
2 tbsp soy sauce | soy sauce
1 tsp ground white pepper | pepper
2 tbsp cornstarch mixed with 3 tbsp water | cornstarch, water
1 egg, lightly beaten | egg
1 tsp toasted sesame oil | sesame oil
2 scallions, chopped | green onion

# Split Pea Soup
1 lb dried green split peas, rinsed | pea
1 smoked ham hock | ham
1 onion, chopped | onion
2 carrots, chopped | carrot
2 celery stalks, chopped | celery
8 cups water | water
1 bay leaf | bay leaf
1/2 tsp dried thyme | thyme
salt and pepper as needed | salt, pepper

# Gazpacho
2 lb ripe tomatoes, cored and chopped | tomato
1 cucumber, peeled and chopped | cucumber
1 red bell pepper, seeded | bell pepper
1/2 small red onion | onion
1 garlic clove | garlic
2 slices day-old bread, crusts removed | bread
3 tbsp sherry vinegar | sherry vinegar
1/3 cup extra-virgin olive oil | olive oil
1 tsp salt | salt

# Thai Coconut Chicken Soup
2 (13.5 oz) cans coconut milk | coconut milk
2 cups chicken broth | chicken broth
1 lb chicken breast, thinly sliced | chicken
2 stalks lemongrass, bruised and cut into pieces | lemongrass
1 2-inch piece galangal, sliced | galangal
5 makrut lime leaves | lime leaf
8 oz oyster mushrooms, torn | mushroom
3 tbsp fish sauce | fish sauce
juice of 2 limes | lime
2 Thai chiles, smashed | chile
cilantro leaves for garnish | cilantro

# Corn Chowder
4 slices bacon, chopped | bacon
1 onion, diced | onion
2 celery stalks, diced | celery
2 tbsp all-purpose flour | flour
3 cups chicken broth | chicken broth
1 lb red potatoes, diced | potato
4 cups corn kernels, fresh or frozen | corn
1 cup heavy cream | cream
1/2 tsp smoked paprika | paprika
salt and pepper to taste | salt, pepper

# Greek Salad
1 English cucumber, chopped | cucumber
1 pint cherry tomatoes, halved | tomato
1/2 red onion, thinly sliced | onion
1 green bell pepper, sliced | bell pepper
1/2 cup Kalamata olives, pitted | olive
4 oz block feta cheese, cubed | feta
3 tbsp extra-virgin olive oil | olive oil
1 tbsp red wine vinegar | red wine vinegar
1 tsp dried oregano | oregano
pinch of salt | salt

# Caesar Salad
2 heads romaine lettuce, chopped | lettuce
2 cups croutons | crouton
1/2 cup shaved Parmesan | parmesan
4 anchovy fillets, mashed | anchovy
1 garlic clove, grated | garlic
1 egg yolk | egg
1 tbsp lemon juice | lemon
1 tsp Dijon mustard | mustard
1/2 cup olive oil | olive oil
freshly ground pepper | pepper

# Caprese Salad
3 large heirloom tomatoes, sliced | tomato
8 oz fresh mozzarella, sliced | mozzarella
1 bunch fresh basil | basil
2 tbsp best-quality olive oil | olive oil
1 tbsp aged balsamic vinegar | balsamic vinegar
flaky salt and cracked pepper | salt, pepper

# Cobb Salad
1 head romaine, chopped | lettuce
2 cooked chicken breasts, diced | chicken
6 slices bacon, cooked and crumbled | bacon
2 hard-boiled eggs, chopped | egg
1 avocado, diced | avocado
1 cup cherry tomatoes, halved | tomato
1/2 cup crumbled blue cheese | blue cheese
2 tbsp chopped chives | chive
3 tbsp olive oil | olive oil
1 tbsp red wine vinegar | red wine vinegar

# Tabbouleh
1/2 cup fine bulgur | bulgur
3 bunches flat-leaf parsley, finely chopped | parsley
1/2 cup fresh mint, chopped | mint
4 Roma tomatoes, finely diced | tomato
4 green onions, thinly sliced | green onion
1/3 cup fresh lemon juice | lemon
1/3 cup extra-virgin olive oil | olive oil
3/4 tsp salt | salt

# Asian Slaw
4 cups shredded napa cabbage | cabbage
1 cup shredded red cabbage | cabbage
2 carrots, julienned | carrot
3 scallions, sliced | green onion
1/4 cup chopped cilantro | cilantro
3 tbsp rice vinegar | rice vinegar
1 tbsp soy sauce | soy sauce
1 tbsp toasted sesame oil | sesame oil
1 tbsp honey | honey
2 tbsp toasted sesame seeds | sesame seed

# Quinoa Salad
1 cup quinoa, rinsed | quinoa
1 3/4 cups water | water
1 (15 oz) can chickpeas, drained | chickpea
1 cucumber, diced | cucumber
1 cup grape tomatoes, halved | tomato
1/3 cup crumbled feta | feta
1/4 cup chopped parsley | parsley
3 tbsp olive oil | olive oil
zest and juice of 1 lemon | lemon
salt and pepper to taste | salt, pepper

# Potato Salad
3 lb red potatoes, scrubbed | potato
3/4 cup mayonnaise | mayonnaise
2 tbsp yellow mustard | mustard
2 celery stalks, finely diced | celery
1/4 cup diced red onion | onion
3 hard-cooked eggs, chopped | egg
2 tbsp sweet pickle relish | relish
1 tsp paprika, for sprinkling | paprika
salt and pepper to taste | salt, pepper

# Waldorf Salad
2 crisp apples, cored and diced | apple
1 cup red seedless grapes, halved | grape
2 celery ribs, sliced | celery
1/2 cup walnuts, toasted and chopped | walnut
1/2 cup mayonnaise | mayonnaise
1 tbsp lemon juice | lemon
lettuce leaves for serving | lettuce

# Nicoise Salad
1 lb small new potatoes | potato
8 oz green beans, trimmed | green bean
4 eggs | egg
2 (5 oz) cans oil-packed tuna, drained | tuna
1 cup cherry tomatoes | tomato
1/2 cup Nicoise olives | olive
1 head butter lettuce | lettuce
1 tbsp Dijon mustard | mustard
2 tbsp red wine vinegar | red wine vinegar
1/3 cup olive oil | olive oil
salt and pepper | salt, pepper

# Cucumber Raita
1 cup plain whole-milk yogurt | yogurt
1 small cucumber, grated and squeezed dry | cucumber
1/2 tsp ground roasted cumin | cumin
2 tbsp chopped mint | mint
pinch of salt | salt
pinch of cayenne | cayenne

# Kale Salad with Apple and Pecans
1 bunch lacinato kale, stems removed, thinly sliced | kale
1 Honeycrisp apple, thinly sliced | apple
1/3 cup pecans, toasted | pecan
1/4 cup dried cranberries | cranberry
1/4 cup shaved Parmesan | parmesan
2 tbsp apple cider vinegar | apple cider vinegar
1 tsp maple syrup | maple syrup
3 tbsp olive oil | olive oil
1/4 tsp kosher salt | salt

# Three Bean Salad
1 (15 oz) can kidney beans, rinsed | bean
1 (15 oz) can chickpeas, rinsed | chickpea
2 cups cut green beans, blanched | green bean
1/2 red onion, finely chopped | onion
1/3 cup apple cider vinegar | apple cider vinegar
1/4 cup sugar | sugar
1/4 cup vegetable oil | vegetable oil
1 tsp salt | salt

# Watermelon Feta Salad
6 cups cubed seedless watermelon | watermelon
1 cup crumbled feta | feta
1/2 cup fresh mint leaves | mint
1/4 small red onion, very thinly sliced | onion
juice of 1 lime | lime
2 tbsp olive oil | olive oil
flaky sea salt | salt

# Banana Bread
3 very ripe bananas, mashed | banana
1/3 cup melted butter | butter
3/4 cup light brown sugar | brown sugar
1 large egg, beaten | egg
1 tsp vanilla extract | vanilla extract
1 tsp baking soda | baking soda
pinch of salt | salt
1 1/2 cups all-purpose flour | flour
1/2 cup chopped walnuts (optional) | walnut

# Classic White Sandwich Bread
3 1/2 cups bread flour | flour
1 packet (2 1/4 tsp) instant yeast | yeast
1 1/4 cups warm water (110 F) | water
2 tbsp sugar | sugar
2 tbsp softened butter | butter
1 1/2 tsp salt | salt

# Buttermilk Biscuits
2 cups all-purpose flour | flour
1 tbsp baking powder | baking powder
1/2 tsp baking soda | baking soda
1 tsp salt | salt
1 tsp sugar | sugar
6 tbsp cold unsalted butter, cubed | butter
3/4 cup cold buttermilk | buttermilk

# Blueberry Muffins
2 cups all-purpose flour | flour
3/4 cup granulated sugar | sugar
2 tsp baking powder | baking powder
1/2 tsp salt | salt
1/2 cup vegetable oil | vegetable oil
1 egg | egg
1/2 cup milk | milk
1 tsp pure vanilla extract | vanilla extract
1 1/2 cups fresh blueberries | blueberry
1 tbsp coarse sugar, for topping | sugar

# Zucchini Bread
2 cups grated zucchini | zucchini
3 eggs | egg
1 cup vegetable oil | vegetable oil
1 1/2 cups sugar | sugar
2 tsp vanilla | vanilla extract
3 cups flour | flour
1 tsp baking soda | baking soda
1/4 tsp baking powder | baking powder
1 tbsp ground cinnamon | cinnamon
1 tsp salt | salt

# Cornbread
1 cup yellow cornmeal | cornmeal
1 cup all-purpose flour | flour
1/4 cup sugar | sugar
1 tbsp baking powder | baking powder
1/2 tsp salt | salt
1 cup buttermilk | buttermilk
2 large eggs | egg
1/2 cup butter, melted and cooled | butter

# Rosemary Focaccia
500 g bread flour | flour
400 ml lukewarm water | water
7 g instant yeast | yeast
10 g fine sea salt | salt
80 ml extra-virgin olive oil, divided | olive oil
2 sprigs rosemary, leaves picked | rosemary
flaky salt for finishing | salt

# Cinnamon Rolls
4 cups all-purpose flour | flour
1 cup warm milk | milk
2 1/4 tsp active dry yeast | yeast
1/2 cup granulated sugar | sugar
1/3 cup butter, melted | butter
2 eggs, room temperature | egg
1 tsp salt | salt
1 cup packed brown sugar | brown sugar
2 1/2 tbsp ground cinnamon | cinnamon
4 oz cream cheese, softened | cream cheese
1 1/2 cups powdered sugar | powdered sugar
1/2 tsp vanilla extract | vanilla extract

# Irish Soda Bread
4 cups all-purpose flour | flour
1 tsp baking soda | baking soda
1 tsp salt | salt
1 3/4 cups buttermilk | buttermilk
1/2 cup raisins (optional) | raisin

# Pizza Dough
3 cups tipo 00 flour | flour
1 tsp instant yeast | yeast
1 1/4 cups warm water | water
2 tbsp olive oil | olive oil
1 tsp sugar | sugar
1 1/2 tsp salt | salt

# Cranberry Orange Scones
2 cups all-purpose flour | flour
1/3 cup sugar | sugar
1 tbsp baking powder | baking powder
1/4 tsp salt | salt
1/2 cup cold butter, grated | butter
3/4 cup dried cranberries | cranberry
1 tbsp orange zest | orange
2/3 cup heavy cream, plus more for brushing | cream
1 large egg | egg

# Popovers
1 cup all-purpose flour | flour
1 cup whole milk, warmed | milk
2 large eggs | egg
1/2 tsp salt | salt
1 tbsp melted butter | butter

# Pumpkin Bread
1 (15 oz) can pumpkin puree | pumpkin
2 eggs | egg
1/2 cup vegetable oil | vegetable oil
1/3 cup water | water
1 1/2 cups sugar | sugar
1 3/4 cups flour | flour
1 tsp baking soda | baking soda
1 tsp ground cinnamon | cinnamon
1/2 tsp ground nutmeg | nutmeg
1/4 tsp ground cloves | clove
1/2 tsp salt | salt

# Chocolate Chip Cookies
2 1/4 cups all-purpose flour | flour
1 tsp baking soda | baking soda
1 tsp salt | salt
1 cup (2 sticks) unsalted butter, softened | butter
3/4 cup granulated sugar | sugar
3/4 cup packed brown sugar | brown sugar
2 large eggs | egg
2 tsp vanilla extract | vanilla extract
2 cups semisweet chocolate chips | chocolate

# Oatmeal Raisin Cookies
1 cup butter, softened | butter
1 cup brown sugar | brown sugar
1/2 cup white sugar | sugar
2 eggs | egg
1 tsp vanilla | vanilla extract
1 1/2 cups all-purpose flour | flour
1 tsp baking soda | baking soda
1 tsp cinnamon | cinnamon
3 cups old-fashioned rolled oats | oats
1 cup raisins | raisin

# Three-Ingredient Peanut Butter Cookies
1 cup creamy peanut butter | peanut butter
1 cup sugar | sugar
1 egg | egg

# Scottish Shortbread
1 cup salted butter, at room temperature | butter
1/2 cup powdered sugar | powdered sugar
2 cups all-purpose flour | flour
1/4 tsp salt | salt

# Fudgy Brownies
1/2 cup unsalted butter | butter
6 oz bittersweet chocolate, chopped | chocolate
1 cup sugar | sugar
2 eggs plus 1 yolk | egg
1 tsp vanilla extract | vanilla extract
1/2 cup all-purpose flour | flour
3 tbsp unsweetened cocoa powder | cocoa powder
1/4 tsp salt | salt

# Lemon Bars
1 cup all-purpose flour, plus 3 tbsp | flour
1/2 cup butter, softened | butter
1/4 cup confectioners' sugar, plus more for dusting | powdered sugar
4 eggs | egg
1 1/2 cups sugar | sugar
2 tsp grated lemon zest | lemon
1/2 cup fresh lemon juice | lemon
pinch salt | salt

# Carrot Cake
2 cups all-purpose flour | flour
2 tsp baking soda | baking soda
2 tsp ground cinnamon | cinnamon
1/2 tsp ground nutmeg | nutmeg
1 tsp salt | salt
4 eggs | egg
1 1/4 cups vegetable oil | vegetable oil
1 cup sugar | sugar
1 cup brown sugar | brown sugar
3 cups grated carrots | carrot
1 cup chopped pecans | pecan
8 oz cream cheese, for the frosting | cream cheese

# Chicken Tikka Masala
1 1/2 lb boneless chicken thighs, cut into chunks | chicken
1 cup plain yogurt | yogurt
2 tbsp garam masala, divided | garam masala
1 tsp ground turmeric | turmeric
3 tbsp ghee | ghee
1 onion, finely chopped | onion
1 tbsp grated ginger | ginger
4 garlic cloves, minced | garlic
1 (15 oz) can tomato sauce | tomato sauce
1 cup heavy cream | cream
1 tsp Kashmiri chili powder | chili powder
cilantro to garnish | cilantro

# Chana Masala
2 tbsp vegetable oil | vegetable oil
1 tsp cumin seeds | cumin
1 large onion, minced | onion
1 inch ginger, grated | ginger
3 cloves garlic, grated | garlic
1 green chile, slit | chile
2 tomatoes, pureed | tomato
2 tsp garam masala | garam masala
1/2 tsp ground turmeric | turmeric
2 (15 oz) cans chickpeas, drained | chickpea
juice of half a lemon | lemon
fresh coriander leaves, chopped | cilantro

# Thai Green Curry with Chicken
1 tbsp vegetable oil | vegetable oil
2 tbsp green curry paste | green curry paste
1 (13.5 oz) can coconut milk | coconut milk
1 lb chicken breast, sliced | chicken
1 cup Thai eggplant, quartered | eggplant
1 red bell pepper, sliced | bell pepper
1 tbsp fish sauce | fish sauce
1 tsp brown sugar | brown sugar
4 makrut lime leaves, torn | lime leaf
1 cup Thai basil leaves | basil

# Thai Red Curry with Shrimp
3 tbsp red curry paste | red curry paste
1 (14 oz) can coconut milk | coconut milk
1 lb shrimp, peeled and deveined | shrimp
1 cup bamboo shoots, drained | bamboo shoot
1 cup snow peas | snow pea
1 tbsp fish sauce | fish sauce
2 tsp brown sugar | brown sugar
1 lime, cut into wedges | lime
handful of Thai basil | basil
steamed jasmine rice, to serve | rice

# Japanese Chicken Curry
1 tbsp vegetable oil | vegetable oil
1 lb chicken thighs, cut into bite-size pieces | chicken
1 onion, sliced | onion
2 carrots, cut into chunks | carrot
2 potatoes, cut into chunks | potato
3 cups water | water
4 oz Japanese curry roux blocks | curry roux
1 tbsp ketchup | ketchup
1 small apple, grated | apple
cooked short-grain rice, to serve | rice

# Lamb Rogan Josh
2 lb lamb shoulder, cubed | lamb
1 cup plain yogurt | yogurt
3 tbsp ghee | ghee
2 onions, thinly sliced | onion
4 cardamom pods | cardamom
1 cinnamon stick | cinnamon
4 whole cloves | clove
1 tbsp Kashmiri chili powder | chili powder
1 tsp ground ginger | ginger
2 tsp ground fennel | fennel
1 tsp garam masala | garam masala
1 tsp salt | salt

# Palak Paneer
1 lb fresh spinach | spinach
8 oz paneer, cubed | paneer
2 tbsp ghee | ghee
1/2 tsp cumin seeds | cumin
1 onion, chopped | onion
2 garlic cloves | garlic
1 inch piece ginger | ginger
1 green chili | chile
1/2 tsp garam masala | garam masala
1/4 cup heavy cream | cream
salt to taste | salt

# Dal Tadka
1 cup yellow split lentils (toor dal), rinsed | lentil
3 cups water | water
1/2 tsp ground turmeric | turmeric
1 tsp salt | salt
1 tomato, chopped | tomato
2 tbsp ghee | ghee
1 tsp cumin seeds | cumin
2 dried red chiles | chile
3 garlic cloves, sliced | garlic
pinch of asafoetida | asafoetida
2 tbsp chopped cilantro | cilantro

# Massaman Beef Curry
1 1/2 lb beef chuck, cubed | beef
3 tbsp massaman curry paste | massaman curry paste
2 (13.5 oz) cans coconut milk | coconut milk
2 medium potatoes, cut into chunks | potato
1 onion, cut into wedges | onion
1 cinnamon stick | cinnamon
1/3 cup roasted peanuts | peanut
2 tbsp fish sauce | fish sauce
1 tbsp tamarind paste | tamarind
1 tbsp brown sugar | brown sugar

# Coconut Fish Curry
2 tbsp coconut oil | coconut oil
10 curry leaves | curry leaf
1 onion, sliced | onion
3 garlic cloves, minced | garlic
1 tbsp grated ginger | ginger
1 tbsp curry powder | curry powder
1/2 tsp ground turmeric | turmeric
2 tomatoes, chopped | tomato
1 (14 oz) can coconut milk | coconut milk
1 1/2 lb cod fillets, cut into chunks | cod
juice of 1 lime | lime
salt to taste | salt

# Vegetable Korma
2 tbsp ghee | ghee
1 onion, finely chopped | onion
2 tsp grated fresh ginger | ginger
1/2 cup raw cashews, soaked | cashew
1 cup plain yogurt | yogurt
2 carrots, diced | carrot
1 cup cauliflower florets | cauliflower
1 cup green peas | pea
1 potato, cubed | potato
1 tsp garam masala | garam masala
1/2 tsp ground cardamom | cardamom
1/2 cup cream | cream

# Sweet Potato and Chickpea Curry
1 tbsp coconut oil | coconut oil
1 onion, diced | onion
3 cloves garlic, minced | garlic
2 tbsp red curry paste | red curry paste
2 medium sweet potatoes, peeled and cubed | sweet potato
1 (15 oz) can chickpeas, drained and rinsed | chickpea
1 (13.5 oz) can light coconut milk | coconut milk
1 (14 oz) can diced tomatoes | tomato
2 cups baby spinach | spinach
1 lime | lime

# Beef and Broccoli
1 lb flank steak, thinly sliced against the grain | beef
4 cups broccoli florets | broccoli
1/3 cup soy sauce | soy sauce
2 tbsp oyster sauce | oyster sauce
1 tbsp brown sugar | brown sugar
1 tbsp cornstarch | cornstarch
2 garlic cloves, minced | garlic
1 tsp grated ginger | ginger
2 tbsp vegetable oil | vegetable oil
1 tsp sesame oil | sesame oil

# Kung Pao Chicken
1 lb boneless chicken breast, diced | chicken
1 tbsp Shaoxing wine | shaoxing wine
2 tbsp soy sauce | soy sauce
1 tbsp Chinkiang black vinegar | black vinegar
2 tsp cornstarch | cornstarch
1 tsp sugar | sugar
2 tbsp vegetable oil | vegetable oil
8 dried red chiles | chile
1 tsp Sichuan peppercorns | sichuan pepper
2 garlic cloves, sliced | garlic
3 green onions, cut into 1-inch pieces | green onion
1/2 cup roasted peanuts | peanut

# Vegetable Lo Mein
8 oz lo mein egg noodles | noodle
2 tbsp vegetable oil | vegetable oil
1 cup sliced shiitake mushrooms | mushroom
1 red bell pepper, thinly sliced | bell pepper
1 carrot, julienned | carrot
2 cups shredded cabbage | cabbage
3 tbsp soy sauce | soy sauce
1 tbsp oyster sauce | oyster sauce
1 tsp sugar | sugar
2 tsp sesame oil | sesame oil
2 scallions, sliced | green onion

# Pad Thai
8 oz flat rice noodles | noodle
3 tbsp tamarind paste | tamarind
3 tbsp fish sauce | fish sauce
2 tbsp brown sugar | brown sugar
2 tbsp vegetable oil | vegetable oil
8 oz shrimp | shrimp
2 eggs | egg
1 cup bean sprouts | bean sprout
3 green onions, cut into lengths | green onion
1/3 cup chopped roasted peanuts | peanut
lime wedges to serve | lime

# Garlic Shrimp with Snow Peas
1 lb shrimp, peeled | shrimp
2 cups snow peas, trimmed | snow pea
6 garlic cloves, minced | garlic
2 tbsp soy sauce | soy sauce
1 tbsp Shaoxing rice wine | shaoxing wine
1 tsp cornstarch | cornstarch
1 tbsp vegetable oil | vegetable oil
1/2 tsp white pepper | pepper

# Chicken Fried Rice
2 tbsp vegetable oil | vegetable oil
8 oz chicken breast, diced | chicken
2 eggs, beaten | egg
3 cups cooked jasmine rice, chilled overnight | rice
1 cup frozen peas and carrots | pea, carrot
3 green onions, sliced | green onion
2 garlic cloves, minced | garlic
3 tbsp soy sauce | soy sauce
1 tsp sesame oil | sesame oil

# Mapo Tofu
1 tbsp vegetable oil | vegetable oil
4 oz ground pork | pork
2 tbsp doubanjiang (chili bean paste) | doubanjiang
1 tsp ground Sichuan peppercorns | sichuan pepper
2 garlic cloves, minced | garlic
1 tsp minced ginger | ginger
1 cup chicken stock | chicken broth
1 tbsp soy sauce | soy sauce
1 lb soft tofu, cut into cubes | tofu
1 tbsp cornstarch, mixed with 2 tbsp water | cornstarch, water
2 scallions, finely sliced | green onion

# Sweet and Sour Pork
1 lb pork loin, cubed | pork
1/2 cup cornstarch | cornstarch
1 egg | egg
oil for frying | vegetable oil
1 green bell pepper, cut into squares | bell pepper
1/2 onion, cut into chunks | onion
1 cup pineapple chunks | pineapple
1/4 cup ketchup | ketchup
3 tbsp rice vinegar | rice vinegar
3 tbsp sugar | sugar
1 tbsp soy sauce | soy sauce

# Teriyaki Chicken
1 1/2 lb boneless chicken thighs | chicken
1/3 cup soy sauce | soy sauce
3 tbsp mirin | mirin
2 tbsp sake | sake
2 tbsp sugar | sugar
1 tsp grated ginger | ginger
1 tbsp vegetable oil | vegetable oil
toasted sesame seeds for garnish | sesame seed

# Cashew Chicken
1 lb chicken breast, cut into cubes | chicken
2 tsp cornstarch | cornstarch
2 tbsp vegetable oil | vegetable oil
3/4 cup unsalted cashews | cashew
1 red bell pepper, diced | bell pepper
1/2 onion, diced | onion
3 garlic cloves, minced | garlic
3 tbsp hoisin sauce | hoisin sauce
2 tbsp soy sauce | soy sauce
1 tbsp rice vinegar | rice vinegar

# Stir-Fried Bok Choy with Garlic
1 lb baby bok choy, halved | bok choy
1 tbsp vegetable oil | vegetable oil
4 garlic cloves, thinly sliced | garlic
1 tbsp oyster sauce | oyster sauce
1 tsp soy sauce | soy sauce
2 tbsp water | water

# Korean Beef Bulgogi
1 1/2 lb ribeye, very thinly sliced | beef
1/2 Asian pear, grated | pear
1/3 cup soy sauce | soy sauce
2 tbsp brown sugar | brown sugar
1 tbsp sesame oil | sesame oil
4 garlic cloves, minced | garlic
1 tsp grated ginger | ginger
3 green onions, chopped | green onion
1 tsp toasted sesame seeds | sesame seed
1/4 tsp black pepper | pepper

# Buttermilk Pancakes
2 cups all-purpose flour | flour
2 tbsp sugar | sugar
1 1/2 tsp baking powder | baking powder
1 tsp baking soda | baking soda
1/2 tsp salt | salt
2 cups buttermilk | buttermilk
2 eggs | egg
3 tbsp butter, melted, plus more for the pan | butter
maple syrup, for serving | maple syrup

# Classic French Toast
8 thick slices day-old brioche | bread
4 large eggs | egg
2/3 cup milk | milk
1 tsp vanilla extract | vanilla extract
1/2 tsp ground cinnamon | cinnamon
1 tbsp sugar | sugar
2 tbsp butter, for the griddle | butter
powdered sugar for dusting | powdered sugar

# Belgian Waffles
2 cups flour | flour
1 tbsp baking powder | baking powder
2 tbsp sugar | sugar
1/2 tsp salt | salt
2 large eggs, separated | egg
1 3/4 cups milk | milk
1/2 cup vegetable oil | vegetable oil
1 tsp vanilla | vanilla extract
fresh strawberries and whipped cream, to serve | strawberry, cream

# Shakshuka
2 tbsp olive oil | olive oil
1 onion, diced | onion
1 red bell pepper, diced | bell pepper
3 garlic cloves, minced | garlic
1 tsp ground cumin | cumin
1 tsp sweet paprika | paprika
1/4 tsp cayenne pepper | cayenne
1 (28 oz) can whole tomatoes, crushed | tomato
6 eggs | egg
1/4 cup crumbled feta | feta
chopped parsley and cilantro | parsley, cilantro
salt and pepper to taste | salt, pepper

# Overnight Oats
1/2 cup rolled oats | oats
1/2 cup almond milk | almond milk
1/4 cup Greek yogurt | yogurt
1 tbsp chia seeds | chia seed
1 tsp honey | honey
1/2 cup raspberries | raspberry

# Spinach Feta Omelette
3 eggs | egg
1 tbsp milk | milk
1 tbsp butter | butter
1 cup baby spinach | spinach
2 tbsp crumbled feta | feta
pinch of salt and pepper | salt, pepper

# Huevos Rancheros
2 tbsp vegetable oil | vegetable oil
4 corn tortillas | tortilla
1 cup refried beans, warmed | bean
4 eggs | egg
1 cup tomato salsa | salsa
1 avocado, sliced | avocado
1/4 cup crumbled cotija | cotija
cilantro for garnish | cilantro

# Breakfast Burrito
8 oz breakfast sausage, browned and crumbled | sausage
1 cup diced potatoes, roasted | potato
2 tbsp butter | butter
6 eggs, scrambled | egg
4 large flour tortillas | tortilla
1 cup shredded cheddar | cheddar
1/2 cup salsa | salsa
hot sauce (optional) | hot sauce

# Maple Pecan Granola
3 cups old-fashioned oats | oats
1 cup pecan halves | pecan
1/2 cup unsweetened shredded coconut | coconut
1/2 cup pumpkin seeds | pumpkin seed
1/3 cup maple syrup | maple syrup
1/4 cup coconut oil, melted | coconut oil
1 tsp vanilla extract | vanilla extract
1/2 tsp ground cinnamon | cinnamon
1/2 tsp flaky sea salt | salt
1/2 cup dried cherries | cherry

# Eggs Benedict
2 English muffins, split and toasted | english muffin
4 slices Canadian bacon | bacon
4 large eggs, very fresh | egg
1 tbsp white vinegar, for poaching | vinegar
3 egg yolks | egg
1 tbsp lemon juice | lemon
1/2 cup unsalted butter, melted | butter
pinch of cayenne | cayenne
chopped chives | chive

# Avocado Toast
2 slices sourdough bread, toasted | bread
1 ripe avocado | avocado
1 tsp lemon juice | lemon
1 tbsp extra-virgin olive oil | olive oil
1/4 tsp red pepper flakes | red pepper flakes
flaky salt | salt

# Coconut Chia Pudding
1/4 cup chia seeds | chia seed
1 cup coconut milk | coconut milk
1 tbsp maple syrup | maple syrup
1/4 tsp vanilla extract | vanilla extract
1/2 mango, diced, for topping | mango

# Breakfast Hash with Sausage
1 lb Yukon Gold potatoes, diced small | potato
2 tbsp olive oil | olive oil
8 oz pork sausage, casings removed | sausage
1 onion, diced | onion
1 green bell pepper, diced | bell pepper
1/2 tsp smoked paprika | paprika
4 eggs | egg
salt and pepper, to taste | salt, pepper

# Quiche Lorraine
1 unbaked 9-inch pie crust | pie crust
6 slices bacon, cooked and chopped | bacon
1 cup shredded Gruyere | gruyere
4 large eggs | egg
1 cup heavy cream | cream
1/2 cup whole milk | milk
1/4 tsp ground nutmeg | nutmeg
1/2 tsp salt | salt
1/4 tsp white pepper | pepper

# Dutch Baby Pancake
3 tbsp butter | butter
3 eggs, room temperature | egg
1/2 cup all-purpose flour | flour
1/2 cup whole milk | milk
1 tbsp sugar | sugar
pinch of salt | salt
lemon wedges and powdered sugar, for serving | lemon, powdered sugar

# Dark Chocolate Mousse
6 oz dark chocolate (70%), chopped | chocolate
3 eggs, separated | egg
2 tbsp sugar | sugar
1 cup heavy whipping cream | cream
pinch of salt | salt

# Creme Brulee
2 cups heavy cream | cream
2 tsp pure vanilla extract | vanilla extract
5 egg yolks | egg
1/2 cup sugar, plus more for the tops | sugar
pinch salt | salt

# Apple Crisp
6 apples (such as Granny Smith), peeled and sliced | apple
2 tbsp lemon juice | lemon
1/2 cup granulated sugar | sugar
1 tsp ground cinnamon | cinnamon
3/4 cup rolled oats | oats
3/4 cup all-purpose flour | flour
3/4 cup brown sugar | brown sugar
1/2 cup cold butter, cubed | butter
1/4 tsp salt | salt
vanilla ice cream, for serving | ice cream

# Tiramisu
6 egg yolks | egg
3/4 cup sugar | sugar
16 oz mascarpone | mascarpone
1 1/2 cups heavy cream | cream
2 cups strong espresso, cooled | coffee
3 tbsp coffee liqueur | coffee liqueur
24 ladyfingers | ladyfinger
2 tbsp unsweetened cocoa powder | cocoa powder

# Vanilla Panna Cotta
2 1/2 tsp powdered gelatin | gelatin
3 tbsp cold water | water
2 1/2 cups heavy cream | cream
1/2 cup whole milk | milk
1/3 cup sugar | sugar
1 tsp vanilla extract | vanilla extract
fresh raspberries, to serve | raspberry

# Stovetop Rice Pudding
3/4 cup short-grain white rice | rice
4 cups whole milk | milk
1/2 cup sugar | sugar
1/4 tsp salt | salt
1 cinnamon stick | cinnamon
1 strip lemon peel | lemon
1/3 cup golden raisins | raisin
1 tsp vanilla | vanilla extract

# New York Cheesecake
1 1/2 cups graham cracker crumbs | graham cracker
6 tbsp butter, melted | butter
1/4 cup sugar, for the crust | sugar
32 oz cream cheese, at room temperature | cream cheese
1 cup sugar | sugar
1 cup sour cream | sour cream
4 large eggs | egg
2 tsp vanilla extract | vanilla extract
1 tbsp lemon juice | lemon

# Peach Cobbler
6 cups sliced peaches, fresh or frozen | peach
1/2 cup sugar, divided | sugar
1 tbsp cornstarch | cornstarch
1 tsp ground cinnamon | cinnamon
1 cup all-purpose flour | flour
2 tsp baking powder | baking powder
1/2 tsp salt | salt
3/4 cup milk | milk
1/2 cup butter, melted | butter

# Strawberry Shortcake
1 lb strawberries, hulled and sliced | strawberry
1/4 cup sugar, divided | sugar
2 cups all-purpose flour | flour
1 tbsp baking powder | baking powder
1/2 tsp salt | salt
1/2 cup cold butter | butter
2/3 cup heavy cream, plus 1 cup for whipping | cream
1 tsp vanilla extract | vanilla extract

# Molten Chocolate Lava Cakes
4 oz semisweet chocolate | chocolate
1/2 cup butter | butter
1 cup powdered sugar | powdered sugar
2 eggs | egg
2 egg yolks | egg
6 tbsp all-purpose flour | flour
cocoa powder for dusting the ramekins | cocoa powder

# Key Lime Pie
1 1/2 cups graham cracker crumbs | graham cracker
1/3 cup sugar | sugar
6 tbsp melted butter | butter
2 (14 oz) cans sweetened condensed milk | condensed milk
4 egg yolks | egg
2/3 cup key lime juice | lime
1 tbsp lime zest | lime
whipped cream, for topping | cream

# Pumpkin Pie
1 (15 oz) can pure pumpkin | pumpkin
1 (12 oz) can evaporated milk | evaporated milk
2 large eggs | egg
3/4 cup granulated sugar | sugar
1 tsp ground cinnamon | cinnamon
1/2 tsp ground ginger | ginger
1/4 tsp ground cloves | clove
1/2 tsp salt | salt
1 unbaked 9-inch pie crust | pie crust

# Mango Sticky Rice
1 1/2 cups Thai glutinous rice, soaked 4 hours | rice
1 (13.5 oz) can coconut milk | coconut milk
1/2 cup sugar | sugar
1/2 tsp salt | salt
2 ripe mangoes, peeled and sliced | mango
1 tbsp toasted sesame seeds | sesame seed

# Bread Pudding with Raisins
6 cups cubed day-old bread | bread
2 cups milk | milk
1 cup heavy cream | cream
4 eggs | egg
3/4 cup brown sugar | brown sugar
1 tsp ground cinnamon | cinnamon
1 tsp vanilla extract | vanilla extract
1/2 cup raisins | raisin
3 tbsp butter, melted | butter

# Poached Pears in Red Wine
4 firm Bosc pears, peeled | pear
1 bottle (750 ml) dry red wine | red wine
3/4 cup sugar | sugar
1 cinnamon stick | cinnamon
2 star anise pods | star anise
2 strips orange peel | orange

# Basil Pesto
2 cups packed fresh basil leaves | basil
1/3 cup pine nuts, toasted | pine nut
2 garlic cloves | garlic
1/2 cup freshly grated Parmesan | parmesan
1/2 cup extra-virgin olive oil | olive oil
1/4 tsp salt | salt

# Marinara Sauce
3 tbsp olive oil | olive oil
4 garlic cloves, thinly sliced | garlic
1/2 tsp red pepper flakes | red pepper flakes
1 (28 oz) can San Marzano tomatoes | tomato
1 tsp dried oregano | oregano
6 basil leaves | basil
1 tsp salt | salt

# Bechamel Sauce
3 tbsp butter | butter
3 tbsp all-purpose flour | flour
2 cups whole milk, warmed | milk
pinch of ground nutmeg | nutmeg
salt and white pepper | salt, pepper

# Chimichurri
1 cup packed flat-leaf parsley, finely chopped | parsley
2 tbsp fresh oregano leaves | oregano
4 garlic cloves, minced | garlic
1/2 tsp red pepper flakes | red pepper flakes
3 tbsp red wine vinegar | red wine vinegar
1/2 cup olive oil | olive oil
1/2 tsp coarse salt | salt

# Tzatziki
1 cup Greek yogurt | yogurt
1/2 English cucumber, grated and squeezed | cucumber
1 garlic clove, grated | garlic
1 tbsp chopped fresh dill | dill
1 tbsp lemon juice | lemon
1 tbsp olive oil | olive oil
1/4 tsp salt | salt

# Classic Vinaigrette
1 tbsp Dijon mustard | mustard
3 tbsp white wine vinegar | white wine vinegar
1 small shallot, minced | shallot
1 tsp honey | honey
1/2 cup extra-virgin olive oil | olive oil
salt and freshly cracked pepper | salt, pepper

# Peanut Dipping Sauce
1/2 cup natural peanut butter | peanut butter
2 tbsp soy sauce | soy sauce
1 tbsp rice vinegar | rice vinegar
1 tbsp honey | honey
1 tsp sriracha | sriracha
1 garlic clove, grated | garlic
1 tsp grated ginger | ginger
juice of 1/2 lime | lime
3-4 tbsp hot water, to thin | water

# Homemade Teriyaki Sauce
1/2 cup soy sauce | soy sauce
1/4 cup mirin | mirin
2 tbsp honey | honey
1 tbsp rice vinegar | rice vinegar
1 tsp grated ginger | ginger
1 garlic clove, minced | garlic
1 tbsp cornstarch | cornstarch
2 tbsp water | water

# Smoky Barbecue Sauce
1 1/2 cups ketchup | ketchup
1/2 cup apple cider vinegar | apple cider vinegar
1/3 cup packed dark brown sugar | brown sugar
2 tbsp molasses | molasses
1 tbsp Worcestershire sauce | worcestershire sauce
1 tbsp yellow mustard | mustard
1 tsp smoked paprika | paprika
1 tsp garlic powder | garlic powder
1/2 tsp onion powder | onion powder
1/4 tsp cayenne | cayenne

# Tomatillo Salsa Verde
1 lb tomatillos, husked and rinsed | tomatillo
1/2 white onion, chopped | onion
2 serrano chiles, stemmed | chile
2 garlic cloves, unpeeled | garlic
1/2 cup fresh cilantro | cilantro
juice of 1 lime | lime
1 tsp salt | salt

# Pico de Gallo
4 Roma tomatoes, seeded and diced | tomato
1/2 white onion, finely diced | onion
1 jalapeno, minced | chile
1/3 cup chopped cilantro | cilantro
juice of 1 lime | lime
1/2 tsp kosher salt | salt

# Chunky Guacamole
3 ripe Hass avocados | avocado
1/4 cup finely diced red onion | onion
1 serrano pepper, minced | chile
2 tbsp chopped cilantro | cilantro
2 tbsp lime juice | lime
1/2 tsp salt | salt
1 small tomato, diced (optional) | tomato

# Classic Hummus
1 (15 oz) can chickpeas, drained, liquid reserved | chickpea
1/4 cup tahini | tahini
1 garlic clove | garlic
3 tbsp lemon juice | lemon
1/2 tsp ground cumin | cumin
1/2 tsp salt | salt
2-3 tbsp ice water | water
2 tbsp extra-virgin olive oil, plus more to serve | olive oil
pinch of paprika, to garnish | paprika

# Salted Caramel Sauce
1 cup granulated sugar | sugar
1/4 cup water | water
6 tbsp butter, cubed | butter
1/2 cup heavy cream, room temperature | cream
1 tsp vanilla extract | vanilla extract
1 tsp flaky sea salt | salt

# Fresh Lemonade
1 cup fresh lemon juice (about 6 lemons) | lemon
1 cup sugar | sugar
5 cups cold water, divided | water
ice cubes | ice
lemon slices, for garnish | lemon

# Mango Lassi
1 cup chopped ripe mango | mango
1 cup plain yogurt | yogurt
1/2 cup milk | milk
2 tsp sugar, or to taste | sugar
pinch of ground cardamom | cardamom
4 ice cubes | ice

# Masala Chai
2 cups water | water
4 green cardamom pods, crushed | cardamom
1 small cinnamon stick | cinnamon
4 black peppercorns | pepper
1/2 inch fresh ginger, sliced | ginger
2 tsp loose black tea | tea
1 cup whole milk | milk
2 tbsp sugar | sugar

# Mojito
10 fresh mint leaves | mint
1/2 lime, cut into wedges | lime
2 tsp sugar | sugar
2 oz white rum | rum
1 cup crushed ice | ice
1/2 cup club soda | sparkling water

# Margarita on the Rocks
coarse salt for the rim | salt
2 oz blanco tequila | tequila
1 oz fresh lime juice | lime
3/4 oz orange liqueur | orange liqueur
1/2 oz agave syrup | agave syrup
ice | ice

# Rich Hot Chocolate
2 cups whole milk | milk
3 oz dark chocolate, finely chopped | chocolate
1 tbsp cocoa powder | cocoa powder
1 tbsp sugar | sugar
1/4 tsp vanilla extract | vanilla extract
pinch of salt | salt
marshmallows, to serve | marshmallow

# Strawberry Banana Smoothie
1 cup frozen strawberries | strawberry
1 ripe banana | banana
1/2 cup vanilla yogurt | yogurt
1/2 cup orange juice | orange
1 tsp honey (optional) | honey

# Vietnamese Iced Coffee
2 tbsp dark roast ground coffee | coffee
3/4 cup hot water | water
2 tbsp sweetened condensed milk | condensed milk
1 cup ice | ice

# Horchata
1 cup long-grain white rice | rice
1 cinnamon stick, broken | cinnamon
4 cups water, divided | water
1/2 cup sugar | sugar
1 cup milk | milk
1 tsp vanilla extract | vanilla extract

# Red Wine Sangria
1 bottle Spanish red wine | red wine
1/4 cup brandy | brandy
1/4 cup orange liqueur | orange liqueur
2 tbsp sugar | sugar
1 orange, sliced into rounds | orange
1 apple, cored and diced | apple
1 lemon, sliced | lemon
1 cup sparkling water | sparkling water

# Green Smoothie
2 cups baby spinach | spinach
1 frozen banana | banana
1 cup pineapple chunks | pineapple
1 cup unsweetened almond milk | almond milk
1 tbsp almond butter | almond butter
1 tbsp ground flaxseed | flaxseed

# Moscow Mule
2 oz vodka | vodka
1/2 oz fresh lime juice | lime
4 oz chilled ginger beer | ginger beer
crushed ice | ice
lime wheel and mint sprig, to garnish | lime, mint
"""


def parse_dishes(text: str) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """The dishes as (title, [(ingredient line, [generic, ...]), ...]), checked against the rule."""
    dishes: list[tuple[str, list[tuple[str, list[str]]]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("# "):
            dishes.append((line[2:], []))
            continue
        ingredient, sep, generics = line.rpartition(" | ")
        assert sep and ingredient and dishes, f"DISHES line {number}: expected '<line> | <generic>': {line!r}"
        names = generics.split(", ")
        for name in names:
            words = set(name.split())
            assert name == name.lower() and name.isascii(), f"DISHES line {number}: {name!r} is not lowercase ASCII"
            assert not any(c.isdigit() for c in name), f"DISHES line {number}: {name!r} has a quantity"
            assert not words & DROPPED_WORDS, f"DISHES line {number}: {name!r} keeps {sorted(words & DROPPED_WORDS)}"
            assert not name.endswith("s") or name in PLURAL_ONLY, f"DISHES line {number}: {name!r} is not singular"
        dishes[-1][1].append((ingredient, names))
    titles = [title for title, _ in dishes]
    assert len(set(titles)) == len(titles), "duplicate dish titles"
    for title, pairs in dishes:
        assert 3 <= len(pairs) <= 12, f"{title}: {len(pairs)} ingredient lines (expected 3 to 12)"
        assert all(line.isascii() for line, _ in pairs), f"{title}: non-ASCII ingredient line"
    return dishes


def to_example(title: str, pairs: list[tuple[str, list[str]]]) -> dict:
    """One chat example: the recipe as the user turn, its generic ingredients (deduplicated, in order) as the answer."""
    lines = [line for line, _ in pairs]
    generics = list(dict.fromkeys(name for _, names in pairs for name in names))
    user = f"Title: {title}\n\nIngredients: {json.dumps(lines)}\n\nGeneric ingredients: "
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
            {"role": "assistant", "content": json.dumps(generics)},
        ]
    }


def write_splits(out: Path) -> dict[str, int]:
    """Shuffle the dishes with the fixed seed, write train/val/test JSONL under `out`, return the counts."""
    dishes = parse_dishes(DISHES)
    assert len(dishes) == sum(SPLITS.values()), f"{len(dishes)} dishes, expected {sum(SPLITS.values())}"
    order = list(range(len(dishes)))
    random.Random(SEED).shuffle(order)
    out.mkdir(parents=True, exist_ok=True)
    start = 0
    titles: dict[str, set[str]] = {}
    for split, count in SPLITS.items():
        chosen = [dishes[i] for i in order[start : start + count]]
        start += count
        titles[split] = {title for title, _ in chosen}
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as handle:
            for title, pairs in chosen:
                handle.write(json.dumps(to_example(title, pairs)) + "\n")
    assert not titles["test"] & (titles["train"] | titles["val"]), "a test title leaked into train/val"
    assert not titles["train"] & titles["val"], "a val title is also in train"
    return {split: len(names) for split, names in titles.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    args = parser.parse_args()
    counts = write_splits(args.out)
    print(", ".join(f"{split}: {n}" for split, n in counts.items()), f"-> {args.out}")


if __name__ == "__main__":
    main()
