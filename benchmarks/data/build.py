"""Assemble the hand-written benchmark datasets under benchmarks/data/ into chat JSONL splits.

    python benchmarks/data/build.py [recipes_real|support_intents|bug_tickets|tool_calls ...] [--out DIR]
                                                                                                   (default: all)

Everything the datasets say was written by hand in the source files next to this script (recipes_real/recipes.txt,
support_intents/messages.txt, bug_tickets/docs/*.md and bug_tickets/questions.txt, tool_calls/conversations.txt and
tool_calls/tools.json); this script only checks the sources against their written conventions, shuffles with seed 7,
splits and writes JSONL (UTF-8, one example a line).
Running it twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 7


def records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Blank-line separated blocks of a source file as (first line number, lines); `##` lines are comments."""
    block: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.rstrip()
        if line.startswith("##"):
            continue
        if not line:
            if block:
                yield start, block
            block = []
            continue
        if not block:
            start = number
        block.append(line)
    if block:
        yield start, block


def chat(system: str, user: str, assistant: str) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# recipes_real: ingredient lines as people type them -> the ingredient names a recipe-NER annotator marks.

RECIPE_SYSTEM = ("You are a helpful recipe assistant. You are to extract the generic ingredients from each of the "
                 "recipes provided.")
RECIPE_SPLITS = {"train": 100, "val": 20, "test": 50}
# Words an annotation never keeps (README, "Labelling convention"): preparation, handling, size, temperature.
RECIPE_DROPPED = {
    "chopped", "diced", "minced", "sliced", "cubed", "grated", "melted", "softened", "beaten", "cooked", "uncooked",
    "drained", "undrained", "sifted", "packed", "crumbled", "toasted", "peeled", "halved", "quartered", "mashed",
    "thawed", "divided", "rinsed", "trimmed", "seeded", "pitted", "cored", "boneless", "skinless", "unbaked",
    "baked", "hard-boiled", "hard-cooked", "scalded", "fresh", "canned", "large", "small", "medium", "lg", "sm",
    "med", "jumbo", "tiny", "fine", "finely", "hot", "cold", "warm", "boiling", "lukewarm", "chilled", "ripe", "whole",
    "optional", "taste", "garnish", "frying", "approximately", "about",
}  # fmt: skip
# Product names in which a dropped word is part of the name (README lists them).
RECIPE_KEPT_PHRASES = {
    "hot sausage", "hot italian sausage", "hot sauce", "hot pepper sauce", "hot peppers", "small curd", "whole milk",
    "whole wheat", "whole kernel", "ripe olives",
}  # fmt: skip
# The only reorderings: "juice of 1 lemon" is annotated "lemon juice" (README).
RECIPE_REWRITES = re.compile(r"\b(juice|rind|zest|peel) of (?:\d+ |an? |\w+ )?(\w+)")
_WORD = re.compile(r"[a-z0-9&'\u00c0-\u024f-]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(word in it for word in needle)


def recipe_label_problems(line: str, labels: list[str]) -> list[str]:
    """What breaks the convention in one annotated line (empty when it follows it)."""
    problems = []
    text = RECIPE_REWRITES.sub(lambda m: f"{m.group(2)} {m.group(1)}", line.lower())
    words = _words(text)
    for label in labels:
        label_words = _words(label)
        if label != label.lower() or label != label.strip() or "(" in label or not label_words:
            problems.append(f"{label!r} is not a lowercase name")
        if any(re.fullmatch(r"[\d/.]+", word) for word in label_words):
            problems.append(f"{label!r} keeps a quantity")
        dropped = set(label_words) & RECIPE_DROPPED
        if dropped and not any(phrase in label for phrase in RECIPE_KEPT_PHRASES):
            problems.append(f"{label!r} keeps {sorted(dropped)}")
        if not _is_subsequence(label_words, words):
            problems.append(f"{label!r} is not written in the line")
    return problems


def recipes(source: Path) -> list[tuple[str, list[str], list[str]]]:
    """A recipe source's recipes as (title, ingredient lines, labels in order, each once), checked against the
    convention."""
    out, problems = [], []
    for number, block in records(source):
        title = block[0].removeprefix("# ")
        if not block[0].startswith("# ") or len(block) < 4:
            problems.append(f"line {number}: expected '# Title' and 3+ ingredient lines")
            continue
        lines, labels = [], []
        for offset, row in enumerate(block[1:], start=1):
            line, sep, names = row.rpartition(" |")
            names = names.strip()
            if not sep or not line:
                problems.append(f"line {number + offset}: expected '<ingredient line> | <label>; <label>'")
                continue
            found = [n.strip() for n in names.split(";")] if names else []
            problems += [f"line {number + offset}: {p}" for p in recipe_label_problems(line, found)]
            lines.append(line)
            labels += found
        if not 3 <= len(lines) <= 20:
            problems.append(f"line {number}: {title!r} has {len(lines)} ingredient lines")
        out.append((title, lines, list(dict.fromkeys(labels))))
    titles = [title.lower() for title, _, _ in out]
    problems += [f"title {t!r} is used twice" for t in sorted({t for t in titles if titles.count(t) > 1})]
    if problems:
        raise SystemExit(f"{source}:\n  " + "\n  ".join(problems))
    return out


def recipe_rows(dishes: list[tuple[str, list[str], list[str]]]) -> list[dict]:
    return [
        chat(RECIPE_SYSTEM,
             f"Title: {title}\n\nIngredients: {json.dumps(lines, ensure_ascii=False)}\n\nGeneric ingredients: ",
             json.dumps(labels, ensure_ascii=False))
        for title, lines, labels in dishes
    ]


def build_recipes(out: Path) -> dict[str, int]:
    """train/val/test from recipes.txt, and test_more.jsonl from recipes_more.txt: recipes written later, by other
    hands to the same convention, that only ever test (so adding them leaves the first three files as they were)."""
    dishes = recipes(HERE / "recipes_real" / "recipes.txt")
    if len(dishes) != sum(RECIPE_SPLITS.values()):
        raise SystemExit(f"recipes_real: {len(dishes)} recipes, expected {sum(RECIPE_SPLITS.values())}")
    more = recipes(HERE / "recipes_real" / "recipes_more.txt")
    titles = {title.lower() for title, _, _ in dishes}
    again = [title for title, _, _ in more if title.lower() in titles]
    if again:
        raise SystemExit(f"recipes_more.txt repeats titles of recipes.txt: {', '.join(again)}")
    random.Random(SEED).shuffle(dishes)
    random.Random(SEED).shuffle(more)
    counts, start = {}, 0
    for split, count in RECIPE_SPLITS.items():
        write_jsonl(out / f"{split}.jsonl", recipe_rows(dishes[start : start + count]))
        counts[split], start = count, start + count
    write_jsonl(out / "test_more.jsonl", recipe_rows(more))
    return {**counts, "test_more": len(more)}


# ---------------------------------------------------------------------------------------------------------------
# support_intents: one customer message -> one of 60 intent labels; stratified so every label is in every split.

INTENT_SYSTEM = ("You triage customer messages for Orbit, an app for banking, mobile plans and online shopping. "
                 "Reply with the one intent label that fits the message, and nothing else.")
INTENT_PER_LABEL = {"train": 4, "val": 1, "test": 2}
INTENT_COUNT = 60
_LABEL = re.compile(r"[a-z]+(?:_[a-z]+)*")


def intents() -> dict[str, list[str]]:
    """label -> its messages, in source order, checked: 60 snake_case labels, 7 distinct messages each."""
    source = HERE / "support_intents" / "messages.txt"
    by_label: dict[str, list[str]] = {}
    problems = []
    for number, block in records(source):
        for line in block:
            if line.startswith("# "):
                label = line[2:]
                if not _LABEL.fullmatch(label) or label in by_label:
                    problems.append(f"line {number}: {label!r} is not a new snake_case label")
                by_label[label] = []
            elif by_label:
                by_label[label].append(line)
    per_label = sum(INTENT_PER_LABEL.values())
    problems += [f"{label}: {len(m)} messages, expected {per_label}" for label, m in by_label.items()
                 if len(m) != per_label]
    messages = [m for ms in by_label.values() for m in ms]
    problems += [f"message used twice: {m!r}" for m in sorted({m for m in messages if messages.count(m) > 1})]
    if len(by_label) != INTENT_COUNT:
        problems.append(f"{len(by_label)} labels, expected {INTENT_COUNT}")
    if problems:
        raise SystemExit(f"{source}:\n  " + "\n  ".join(problems))
    return by_label


def build_intents(out: Path) -> dict[str, int]:
    by_label = intents()
    rng = random.Random(SEED)
    splits: dict[str, list[dict]] = {split: [] for split in INTENT_PER_LABEL}
    for label, messages in by_label.items():
        messages = messages[:]
        rng.shuffle(messages)
        start = 0
        for split, count in INTENT_PER_LABEL.items():
            splits[split] += [chat(INTENT_SYSTEM, m, label) for m in messages[start : start + count]]
            start += count
    (out / "labels.txt").write_text("".join(f"{label}\n" for label in by_label), encoding="utf-8")
    for split, rows in splits.items():
        rng.shuffle(rows)
        write_jsonl(out / f"{split}.jsonl", rows)
    return {split: len(rows) for split, rows in splits.items()}


# ---------------------------------------------------------------------------------------------------------------
# bug_tickets: questions about 40 Kestrel tickets (docs/*.md); every ticket has questions in train AND in test.

TICKET_SYSTEM = "You answer questions about Kestrel bug tickets. Cite the ticket id."
TICKET_COUNT = 40
QUESTIONS_PER_TICKET = 4
TICKET_FIELDS = ["Status", "Component", "Affects version", "Fixed in", "Reporter", "Created"]
COMPONENTS = {"importer", "thumbnailer", "face-recognition", "sync", "web-ui", "auth", "storage-s3", "search",
              "database"}
_TICKET_ID = re.compile(r"KES-1\d{3}")
_VERSION = re.compile(r"\b[23]\.\d\.\d\b")


def ticket_problems(path: Path) -> list[str]:
    """What a ticket file lacks: heading, metadata fields in order, known component and versions, sections."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    problems = []
    if not re.fullmatch(rf"# {path.stem}: \S.*", lines[0]):
        problems.append(f"first line must be '# {path.stem}: <title>'")
    fields = dict(re.findall(r"^- ([A-Za-z ]+): (.+)$", text, flags=re.MULTILINE))
    if list(fields) != TICKET_FIELDS:
        problems.append(f"metadata fields {list(fields)}, expected {TICKET_FIELDS}")
        return problems
    fixed = fields["Status"] == "Fixed"
    if fields["Component"] not in COMPONENTS:
        problems.append(f"unknown component {fields['Component']!r}")
    if not _VERSION.fullmatch(fields["Affects version"]) or not (
        _VERSION.fullmatch(fields["Fixed in"]) if fixed else fields["Fixed in"] == "—"
    ):
        problems.append("versions must look like 2.8.1 (Fixed in: — unless the status is Fixed)")
    sections = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    if sections != ["Symptoms", "Cause", "Workaround", "Fix"]:
        problems.append(f"sections {sections}, expected Symptoms, Cause, Workaround, Fix")
    return [f"{path}: {p}" for p in problems]


def ticket_questions() -> tuple[dict[str, str], list[dict]]:
    """The ticket texts by id and the questions ({tickets, question, answer, keys}), checked for groundedness:
    every key value is in the answer and in one of the question's tickets, every ticket id and version the
    answer names is in those tickets."""
    folder = HERE / "bug_tickets"
    docs = {path.stem: path.read_text(encoding="utf-8") for path in sorted((folder / "docs").glob("*.md"))}
    problems = [p for path in sorted((folder / "docs").glob("*.md")) for p in ticket_problems(path)]
    if len(docs) != TICKET_COUNT or not all(_TICKET_ID.fullmatch(tid) for tid in docs):
        problems.append(f"expected {TICKET_COUNT} docs named KES-1000.md .. KES-1999.md, found {len(docs)}")
    questions = []
    source = folder / "questions.txt"
    for number, block in records(source):
        fields = dict(line.split(": ", 1) for line in block)
        if list(fields) != ["T", "Q", "A", "K"]:
            problems.append(f"line {number}: expected T:, Q:, A:, K: lines")
            continue
        tickets, keys = fields["T"].split(), fields["K"].split(" | ")
        unknown = [t for t in tickets if t not in docs]
        if unknown:
            problems.append(f"line {number}: unknown ticket(s) {unknown}")
            continue
        text = "\n".join(docs[t] for t in tickets)
        answer = fields["A"]
        problems += [f"line {number}: key {k!r} is not in the answer" for k in keys if k not in answer]
        problems += [f"line {number}: key {k!r} is in none of {tickets}" for k in keys if k not in text]
        named = set(_TICKET_ID.findall(answer)) | set(_VERSION.findall(answer))
        problems += [f"line {number}: the answer names {n}, which none of {tickets} contains" for n in sorted(named)
                     if n not in text]
        if not set(_TICKET_ID.findall(answer)):
            problems.append(f"line {number}: the answer cites no ticket id")
        questions.append({"tickets": tickets, "question": fields["Q"], "answer": answer, "keys": keys})
    per_ticket = {tid: sum(q["tickets"][0] == tid for q in questions) for tid in docs}
    problems += [f"{tid}: {n} questions, expected {QUESTIONS_PER_TICKET}" for tid, n in per_ticket.items()
                 if n != QUESTIONS_PER_TICKET]
    asked = [q["question"] for q in questions]
    problems += [f"question asked twice: {q!r}" for q in sorted({q for q in asked if asked.count(q) > 1})]
    if problems:
        raise SystemExit(f"{folder}:\n  " + "\n  ".join(problems))
    return docs, questions


def build_tickets(out: Path) -> dict[str, int]:
    """Half the tickets (chosen with the seed) put 1 of their 4 questions in test, the other half 2: train 100,
    test 60. facts.json says, per test line, which tickets and values the answer must contain."""
    docs, questions = ticket_questions()
    rng = random.Random(SEED)
    order = sorted(docs)
    rng.shuffle(order)
    test_count = {tid: 1 if rank < len(order) // 2 else 2 for rank, tid in enumerate(order)}
    train, test = [], []
    for tid in sorted(docs):
        mine = [q for q in questions if q["tickets"][0] == tid]
        rng.shuffle(mine)
        test += mine[: test_count[tid]]
        train += mine[test_count[tid] :]
    rng.shuffle(train)
    rng.shuffle(test)
    for split, rows in (("train", train), ("test", test)):
        write_jsonl(out / f"{split}.jsonl", [chat(TICKET_SYSTEM, q["question"], q["answer"]) for q in rows])
    facts = []
    for line, q in enumerate(test, start=1):
        seen = [t["answer"] for t in train if set(t["tickets"]) & set(q["tickets"])]
        facts.append({"line": line, "question": q["question"], "tickets": q["tickets"], "must_contain": q["keys"],
                      "keys_in_train_answers": all(any(k in answer for answer in seen) for k in q["keys"])})
    (out / "facts.json").write_text(json.dumps(facts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"train": len(train), "test": len(test)}


# ---------------------------------------------------------------------------------------------------------------
# tool_calls: riders talk to Spoke, a bike-share app with four tools; the reply to learn is a call, calls or text.

TOOL_SYSTEM = ("You are the assistant in Spoke, the city's bike-share app. Call a tool when the rider needs live data "
               "or an action; otherwise answer briefly. Unless the rider says otherwise: any bike type and 1 bike when "
               "searching, a classic bike held 10 minutes, the last 5 trips (20 for all).")
TOOL_TEST_SHARE = 4  # one conversation in four of every kind is a test conversation
_TURN = re.compile(r"([UACR]): (.+)")
_CALL = re.compile(r"([a-z_]+) (\{.*\})")


def argument_problems(arguments: dict, schema: dict) -> list[str]:
    """What breaks the JSON-schema rules tools.json uses: required keys and no others, enums, patterns, integer
    ranges (a validator library would do more; these four rules are all the schemas need)."""
    problems = [f"keys {sorted(arguments)} are not {sorted(schema['required'])}"] \
        if sorted(arguments) != sorted(schema["required"]) else []  # fmt: skip
    for key, value in arguments.items():
        rule = schema["properties"].get(key, {})
        if "enum" in rule and value not in rule["enum"]:
            problems.append(f"{key}={value!r} is not one of {rule['enum']}")
        if "pattern" in rule and not (isinstance(value, str) and re.fullmatch(rule["pattern"], value)):
            problems.append(f"{key}={value!r} does not match {rule['pattern']}")
        if rule.get("type") == "integer" and not (
            isinstance(value, int) and rule.get("minimum", value) <= value <= rule.get("maximum", value)
        ):
            problems.append(f"{key}={value!r} is not an integer in [{rule.get('minimum')}, {rule.get('maximum')}]")
    return problems


def conversation_kind(messages: list[dict]) -> str:
    """What the reply to learn is: one call of a tool (its name), parallel calls, a call after earlier calls,
    an answer after a tool result, or an answer without tools."""
    final, earlier = messages[-1], any(m.get("tool_calls") for m in messages[:-1])
    if "tool_calls" not in final:
        return "tool_then_answer" if earlier else "no_tool"
    if len(final["tool_calls"]) > 1:
        return "parallel"
    return "two_calls" if earlier else final["tool_calls"][0]["function"]["name"]


def tool_conversations(tools: list[dict]) -> list[list[dict]]:
    """Every conversation of conversations.txt as chat messages (system prompt included), checked: calls name a
    tool with valid arguments that come from the conversation, every call is answered before the rider speaks."""
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in tools}
    path = HERE / "tool_calls" / "conversations.txt"
    conversations = []
    for start, lines in records(path):
        messages, unanswered, said = [{"role": "system", "content": TOOL_SYSTEM}], [], ""
        for offset, line in enumerate(lines):
            where = f"{path.name}:{start + offset}"
            match = _TURN.fullmatch(line)
            if not match:
                raise SystemExit(f"{where}: a turn starts with 'U: ', 'A: ', 'C: ' or 'R: '")
            kind, text = match.groups()
            if kind in "UA" and unanswered:
                raise SystemExit(f"{where}: {len(unanswered)} call(s) have no result")
            if kind == "U":
                messages.append({"role": "user", "content": text})
            elif kind == "A":
                messages.append({"role": "assistant", "content": text})
            elif kind == "R":
                if not unanswered:
                    raise SystemExit(f"{where}: a result answers no call")
                messages.append({"role": "tool", "tool_call_id": unanswered.pop(0), "content": text})
            else:
                call = _CALL.fullmatch(text)
                name, arguments = (call.group(1), json.loads(call.group(2))) if call else (None, None)
                if name not in schemas:
                    raise SystemExit(f"{where}: write 'C: TOOL {{arguments}}' with a tool of tools.json")
                problems = argument_problems(arguments, schemas[name])
                for key in ("near", "station_id", "bike_id"):  # copied from what was said or looked up
                    if key in arguments and arguments[key].casefold() not in said.casefold():
                        problems.append(f"{key}={arguments[key]!r} appears nowhere earlier in the conversation")
                if problems:
                    raise SystemExit(f"{where}: " + "; ".join(problems))
                call_id = f"call_{start:04d}{offset:02d}"
                if messages[-1]["role"] != "assistant" or "tool_calls" not in messages[-1]:
                    messages.append({"role": "assistant", "tool_calls": []})
                messages[-1]["tool_calls"].append({"id": call_id, "type": "function", "function": {
                    "name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}})  # fmt: skip
                unanswered.append(call_id)
            said += "\n" + text
        if messages[1]["role"] != "user" or messages[-1]["role"] != "assistant":
            raise SystemExit(f"{path.name}:{start}: a conversation starts with the rider and ends with the assistant")
        conversations.append(messages)
    return conversations


def build_tool_calls(out: Path) -> dict[str, int]:
    tools = json.loads((HERE / "tool_calls" / "tools.json").read_text(encoding="utf-8"))
    by_kind: dict[str, list[list[dict]]] = {}
    for messages in tool_conversations(tools):
        by_kind.setdefault(conversation_kind(messages), []).append(messages)
    rng = random.Random(SEED)
    train, test = [], []
    for kind in sorted(by_kind):
        group = by_kind[kind]
        if len(group) % TOOL_TEST_SHARE:
            raise SystemExit(f"{kind}: {len(group)} conversations; write a multiple of {TOOL_TEST_SHARE}")
        rng.shuffle(group)
        test += group[: len(group) // TOOL_TEST_SHARE]
        train += group[len(group) // TOOL_TEST_SHARE :]
    rng.shuffle(train)
    rng.shuffle(test)
    for split, rows in (("train", train), ("test", test)):
        write_jsonl(out / f"{split}.jsonl", [{"messages": messages, "tools": tools} for messages in rows])
    return {"train": len(train), "test": len(test)}


BUILDERS: dict[str, Callable[[Path], dict[str, int]]] = {
    "recipes_real": build_recipes, "support_intents": build_intents, "bug_tickets": build_tickets,
    "tool_calls": build_tool_calls,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(BUILDERS)} (default: all)")
    parser.add_argument("--out", type=Path, default=HERE, help="write NAME's files under OUT/NAME (default: here)")
    parser.add_argument("--check-recipes", type=Path, metavar="FILE",
                        help="only check a recipe source file against the labelling convention, and count it")
    args = parser.parse_args()
    if args.check_recipes:
        dishes = recipes(args.check_recipes)
        print(f"{args.check_recipes}: {len(dishes)} recipes follow the convention")
        return
    unknown = sorted(set(args.names) - set(BUILDERS))
    if unknown:
        parser.error(f"unknown dataset(s): {', '.join(unknown)}")
    for name in args.names or BUILDERS:
        (args.out / name).mkdir(parents=True, exist_ok=True)
        counts = BUILDERS[name](args.out / name)
        print(f"{name}: " + ", ".join(f"{split} {n}" for split, n in counts.items()))


if __name__ == "__main__":
    main()
