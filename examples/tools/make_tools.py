"""Write ftlab's function-calling example: Hana, the assistant of a fictional online shop, and its three tools.

Customers of Komorebi Goods (こもれび雑貨) write in Japanese or English; Hana calls `get_weather`,
`search_orders` or `create_ticket` (defined below as pydantic models and turned into OpenAI's tool shape by the
openai package's own `pydantic_function_tool`, as an application using the OpenAI SDK would), or answers without
a tool. The conversations below are ftlab's own wording, written by hand. The reply to learn is the last
assistant message: one call, two calls at once, a call after an earlier call and its result, an answer from a tool
result, or an answer without a tool (a clarifying question when an order number or a city is missing).

Conventions the arguments follow (the system prompt states them): the weather for today in celsius, orders of
any status from the last 30 days (a week is 7 days, a month 30), tickets of normal priority unless the customer
says it is urgent; a city and an order number are copied as the customer wrote them.

The script checks every call (its arguments validate against the tool's model; the city and the order number
appear earlier in the conversation; every call has its result before the conversation goes on), puts one
conversation in four of every kind into test (shuffled with seed 7) and writes train.jsonl (60) and test.jsonl
(20), every line with its `tools`. Running it twice gives the same bytes.

Usage: python examples/tools/make_tools.py [--out DIR]   (DIR defaults to this script's folder)
"""

import argparse
import json
import random
from pathlib import Path
from typing import Any, Literal

from openai import pydantic_function_tool
from pydantic import BaseModel, Field

SEED = 7
TEST_SHARE = 4  # one conversation in four of every kind is a test conversation
SYSTEM_PROMPT = (
    "You are Hana, the assistant of Komorebi Goods (こもれび雑貨), an online shop for tableware and stationery. "
    "Answer in the customer's language, briefly. Call a tool when the customer needs the weather, their orders or "
    "a support ticket. Unless the customer says otherwise: the weather for today in celsius, orders of any status "
    "from the last 30 days, tickets of normal priority. Shipping in Japan is free from ¥5,000, otherwise ¥550; "
    "returns are accepted within 30 days of delivery."
)


class GetWeather(BaseModel):
    """The weather forecast for a city, today or tomorrow."""

    city: str = Field(description="the city as the customer wrote it", max_length=40)
    day: Literal["today", "tomorrow"]
    unit: Literal["celsius", "fahrenheit"]


class SearchOrders(BaseModel):
    """The signed-in customer's orders, newest first."""

    status: Literal["any", "processing", "shipped", "delivered", "cancelled"]
    days: int = Field(description="how many days back to look", ge=1, le=365)


class CreateTicket(BaseModel):
    """Open a support ticket about one order."""

    order_id: str = Field(pattern=r"^KG-[0-9]{6}$")
    category: Literal["damaged", "missing_item", "late", "wrong_item", "refund"]
    priority: Literal["normal", "urgent"]


MODELS: dict[str, type[BaseModel]] = {"get_weather": GetWeather, "search_orders": SearchOrders,
                                      "create_ticket": CreateTicket}  # fmt: skip
COPIED = ("city", "order_id")  # arguments copied from what the conversation said


def U(text: str) -> dict:
    return {"role": "user", "content": text}


def A(text: str) -> dict:
    return {"role": "assistant", "content": text}


def C(name: str, **arguments: Any) -> dict:
    """One tool call (consecutive calls are one reply)."""
    return {"call": name, "arguments": arguments}


def R(result: Any) -> dict:
    """The result of the oldest unanswered call."""
    return {"result": json.dumps(result, ensure_ascii=False)}


def weather(city: str, day: str, condition: str, high: int, low: int, unit: str = "celsius") -> dict:
    return {"city": city, "day": day, "condition": condition, "high": high, "low": low, "unit": unit}


def ticket(ticket_id: str, hours: int = 24) -> dict:
    return {"ticket_id": ticket_id, "status": "open", "reply_within_hours": hours}


TODAY_C, TOMORROW_C = {"day": "today", "unit": "celsius"}, {"day": "tomorrow", "unit": "celsius"}
RECENT = {"status": "any", "days": 30}

CONVERSATIONS: dict[str, list[list[dict]]] = {
    "get_weather": [
        [U("明日の大阪の天気は？"), C("get_weather", city="大阪", **TOMORROW_C)],
        [U("札幌って今日雪降ってる？"), C("get_weather", city="札幌", **TODAY_C)],
        [U("京都の天気を教えてください"), C("get_weather", city="京都", **TODAY_C)],
        [U("明日、福岡に出張です。天気どうかな"), C("get_weather", city="福岡", **TOMORROW_C)],
        [U("那覇の今日の気温、華氏で教えて"), C("get_weather", city="那覇", day="today", unit="fahrenheit")],
        [U("横浜 明日 天気"), C("get_weather", city="横浜", **TOMORROW_C)],
        [U("What's the weather in Tokyo today?"), C("get_weather", city="Tokyo", **TODAY_C)],
        [U("will it rain in Nagoya tomorrow"), C("get_weather", city="Nagoya", **TOMORROW_C)],
        [U("Weather for Seattle tomorrow, in Fahrenheit please"),
         C("get_weather", city="Seattle", day="tomorrow", unit="fahrenheit")],
        [U("How cold is it in Sendai right now?"), C("get_weather", city="Sendai", **TODAY_C)],
        [U("Is it sunny in Kobe?"), C("get_weather", city="Kobe", **TODAY_C)],
        [U("London weather tmrw?"), C("get_weather", city="London", **TOMORROW_C)],
    ],
    "search_orders": [
        [U("最近の注文を見せて"), C("search_orders", **RECENT)],
        [U("発送済みの注文ってある？"), C("search_orders", status="shipped", days=30)],
        [U("過去3か月の注文履歴を確認したい"), C("search_orders", status="any", days=90)],
        [U("キャンセルした注文を一覧で"), C("search_orders", status="cancelled", days=30)],
        [U("この1週間で届いた注文は？"), C("search_orders", status="delivered", days=7)],
        [U("まだ準備中の注文ある？"), C("search_orders", status="processing", days=30)],
        [U("Show me my recent orders"), C("search_orders", **RECENT)],
        [U("Which of my orders have shipped?"), C("search_orders", status="shipped", days=30)],
        [U("orders from the last 2 weeks pls"), C("search_orders", status="any", days=14)],
        [U("Anything still processing from the past 60 days?"), C("search_orders", status="processing", days=60)],
        [U("List the orders I cancelled in the last 365 days"), C("search_orders", status="cancelled", days=365)],
        [U("What got delivered in the past 10 days?"), C("search_orders", status="delivered", days=10)],
    ],
    "create_ticket": [
        [U("KG-204518 の湯呑みが割れて届きました"),
         C("create_ticket", order_id="KG-204518", category="damaged", priority="normal")],
        [U("注文 KG-330172 に箸置きが入っていませんでした"),
         C("create_ticket", order_id="KG-330172", category="missing_item", priority="normal")],
        [U("KG-118845 がまだ届きません。至急確認してください"),
         C("create_ticket", order_id="KG-118845", category="late", priority="urgent")],
        [U("KG-402266 で違う色のノートが届いた"),
         C("create_ticket", order_id="KG-402266", category="wrong_item", priority="normal")],
        [U("KG-275903 を返金してほしいです"),
         C("create_ticket", order_id="KG-275903", category="refund", priority="normal")],
        [U("急ぎです！KG-391024 の急須の蓋が欠けていました"),
         C("create_ticket", order_id="KG-391024", category="damaged", priority="urgent")],
        [U("KG-150637、注文したペンが1本足りない"),
         C("create_ticket", order_id="KG-150637", category="missing_item", priority="normal")],
        [U("KG-286410 届くのが予定より1週間遅れてます"),
         C("create_ticket", order_id="KG-286410", category="late", priority="normal")],
        [U("My order KG-512387 arrived with a cracked bowl"),
         C("create_ticket", order_id="KG-512387", category="damaged", priority="normal")],
        [U("KG-604219 is missing the washi tape I ordered"),
         C("create_ticket", order_id="KG-604219", category="missing_item", priority="normal")],
        [U("I need a refund for KG-733050, please"),
         C("create_ticket", order_id="KG-733050", category="refund", priority="normal")],
        [U("KG-489926 still hasn't arrived and it's a birthday gift for tomorrow - urgent!"),
         C("create_ticket", order_id="KG-489926", category="late", priority="urgent")],
        [U("Got the wrong size apron in KG-655142"),
         C("create_ticket", order_id="KG-655142", category="wrong_item", priority="normal")],
        [U("URGENT: KG-821377 came with a broken teapot lid"),
         C("create_ticket", order_id="KG-821377", category="damaged", priority="urgent")],
        [U("KG-348806 - wrong notebook color, can you open a ticket?"),
         C("create_ticket", order_id="KG-348806", category="wrong_item", priority="normal")],
        [U("Please refund KG-907714, I returned it last week"),
         C("create_ticket", order_id="KG-907714", category="refund", priority="normal")],
    ],
    "parallel": [
        [U("東京と大阪、明日の天気は？"),
         C("get_weather", city="東京", **TOMORROW_C), C("get_weather", city="大阪", **TOMORROW_C)],
        [U("Weather in Paris and Rome today?"),
         C("get_weather", city="Paris", **TODAY_C), C("get_weather", city="Rome", **TODAY_C)],
        [U("KG-120455 のお皿が割れていて、KG-120461 はまだ届いていません"),
         C("create_ticket", order_id="KG-120455", category="damaged", priority="normal"),
         C("create_ticket", order_id="KG-120461", category="late", priority="normal")],
        [U("Show my shipped orders, and what's the weather in Osaka today?"),
         C("search_orders", status="shipped", days=30), C("get_weather", city="Osaka", **TODAY_C)],
    ],
    "two_calls": [
        [U("最近の注文を見せて"), C("search_orders", **RECENT),
         R([{"order_id": "KG-204990", "status": "delivered", "items": ["有田焼 マグカップ"], "date": "2025-05-02"}]),
         A("5月2日に「有田焼 マグカップ」(KG-204990) が配達済みです。"),
         U("そのマグカップ、取っ手が取れてた。チケットお願い"),
         C("create_ticket", order_id="KG-204990", category="damaged", priority="normal")],
        [U("発送済みの注文は？"), C("search_orders", status="shipped", days=30),
         R([{"order_id": "KG-318207", "status": "shipped", "items": ["万年筆インク 3色セット"], "eta": "2025-06-10"}]),
         A("万年筆インク 3色セット (KG-318207) が発送済みで、6月10日にお届け予定です。"),
         U("もう6月14日なのに届いてない。急ぎで調べて"),
         C("create_ticket", order_id="KG-318207", category="late", priority="urgent")],
        [U("東京の天気は？"), C("get_weather", city="東京", **TODAY_C),
         R(weather("東京", "today", "雨", 19, 14)),
         A("東京は今日は雨で、最高19℃、最低14℃です。"),
         U("明日は？"), C("get_weather", city="東京", **TOMORROW_C)],
        [U("キャンセルした注文を見せて"), C("search_orders", status="cancelled", days=30),
         R([{"order_id": "KG-566031", "status": "cancelled", "items": ["竹の弁当箱"], "refunded": False}]),
         A("竹の弁当箱 (KG-566031) がキャンセル済みですが、まだ返金されていません。"),
         U("返金してほしいです"), C("create_ticket", order_id="KG-566031", category="refund", priority="normal")],
        [U("Any orders delivered in the last week?"), C("search_orders", status="delivered", days=7),
         R([{"order_id": "KG-640118", "status": "delivered", "items": ["Hinoki cutting board"], "date": "2025-06-03"}]),
         A("Yes: the Hinoki cutting board (KG-640118) was delivered on 3 June."),
         U("It came split down the middle. Can you open a ticket?"),
         C("create_ticket", order_id="KG-640118", category="damaged", priority="normal")],
        [U("Weather in Kyoto today?"), C("get_weather", city="Kyoto", **TODAY_C),
         R(weather("Kyoto", "today", "sunny", 27, 18)),
         A("Sunny in Kyoto today, 27°C at most and 18°C at night."),
         U("And tomorrow, in Fahrenheit?"), C("get_weather", city="Kyoto", day="tomorrow", unit="fahrenheit")],
        [U("show my orders"), C("search_orders", **RECENT),
         R([{"order_id": "KG-702945", "status": "processing", "items": ["Linen tea towels (2)"],
             "ordered": "2025-05-20"},
            {"order_id": "KG-699310", "status": "delivered", "items": ["Brass pen"], "date": "2025-05-28"}]),
         A("Two orders: linen tea towels (KG-702945), being prepared since 20 May, and a brass pen (KG-699310), "
           "delivered on 28 May."),
         U("The tea towels are taking forever and I need them by Friday. Urgent please"),
         C("create_ticket", order_id="KG-702945", category="late", priority="urgent")],
        [U("What have I ordered in the past 60 days?"), C("search_orders", status="any", days=60),
         R([{"order_id": "KG-655870", "status": "delivered", "items": ["Cast iron kettle"], "date": "2025-04-30"}]),
         A("One order: a cast iron kettle (KG-655870), delivered on 30 April."),
         U("I got a stainless kettle instead, not cast iron"),
         C("create_ticket", order_id="KG-655870", category="wrong_item", priority="normal")],
    ],
    "tool_then_answer": [
        [U("明日の名古屋の天気は？"), C("get_weather", city="名古屋", **TOMORROW_C),
         R(weather("名古屋", "tomorrow", "くもり時々晴れ", 24, 16)),
         A("明日の名古屋はくもり時々晴れ、最高24℃、最低16℃の予報です。")],
        [U("発送済みの注文を見せて"), C("search_orders", status="shipped", days=30), R([]),
         A("この30日間に発送済みの注文はありません。")],
        [U("KG-210384 のマグが欠けてました"),
         C("create_ticket", order_id="KG-210384", category="damaged", priority="normal"), R(ticket("T-58211")),
         A("チケット T-58211 を作成しました。24時間以内に担当者からご連絡します。")],
        [U("過去1週間の注文は？"), C("search_orders", status="any", days=7),
         R([{"order_id": "KG-377612", "status": "processing", "items": ["和紙の便箋"], "ordered": "2025-06-08"}]),
         A("6月8日にご注文の和紙の便箋 (KG-377612) が準備中です。")],
        [U("札幌の今日の天気"), C("get_weather", city="札幌", **TODAY_C), R(weather("札幌", "today", "雪", -1, -7)),
         A("札幌は今日は雪で、最高-1℃、最低-7℃です。暖かくしてお出かけください。")],
        [U("至急！KG-498120 が届かない"), C("create_ticket", order_id="KG-498120", category="late", priority="urgent"),
         R(ticket("T-58340", 4)), A("至急のチケット T-58340 を作成しました。4時間以内にご連絡します。")],
        [U("What's the weather in Boston tomorrow in Fahrenheit?"),
         C("get_weather", city="Boston", day="tomorrow", unit="fahrenheit"),
         R(weather("Boston", "tomorrow", "thunderstorms", 82, 68, "fahrenheit")),
         A("Thunderstorms in Boston tomorrow, with a high of 82°F and a low of 68°F.")],
        [U("Do I have any cancelled orders?"), C("search_orders", status="cancelled", days=30), R([]),
         A("No, none of your orders from the last 30 days was cancelled.")],
        [U("KG-815263 arrived without the chopsticks"),
         C("create_ticket", order_id="KG-815263", category="missing_item", priority="normal"), R(ticket("T-58472")),
         A("I've opened ticket T-58472 for the missing chopsticks; our team will reply within 24 hours.")],
        [U("Which orders are still processing?"), C("search_orders", status="processing", days=30),
         R([{"order_id": "KG-902118", "status": "processing", "items": ["Indigo noren curtain"],
             "ordered": "2025-06-11"},
            {"order_id": "KG-902540", "status": "processing", "items": ["Ceramic dripper"], "ordered": "2025-06-12"}]),
         A("Two orders are being prepared: the indigo noren curtain (KG-902118) and the ceramic dripper "
           "(KG-902540).")],
        [U("Weather in Hiroshima today?"), C("get_weather", city="Hiroshima", **TODAY_C),
         R(weather("Hiroshima", "today", "clear", 31, 23)),
         A("Clear skies in Hiroshima today: up to 31°C, 23°C at night.")],
        [U("Refund KG-733918 please, I sent it back"),
         C("create_ticket", order_id="KG-733918", category="refund", priority="normal"), R(ticket("T-58590")),
         A("Done: refund ticket T-58590 is open, and you'll hear from us within 24 hours.")],
    ],
    "no_tool": [
        [U("送料はいくらですか？"), A("国内は5,000円以上のご注文で送料無料、それ未満は550円です。")],
        [U("割れたお皿が届きました。チケットを作ってください"),
         A("申し訳ございません。チケットを作成しますので、注文番号 (KG- から始まる番号) を教えていただけますか？")],
        [U("ありがとう！"), A("どういたしまして。ほかにもお手伝いできることがあればお知らせください。")],
        [U("返品はできますか？"),
         A("はい、お届けから30日以内なら返品できます。注文番号を教えていただければ返金のチケットを作成します。")],
        [U("おすすめの映画を教えて"), A("申し訳ありませんが、ご注文やサポート、天気についてのみお手伝いしています。")],
        [U("注文がまだ届きません"),
         A("ご不便をおかけしております。お調べしますので、注文番号 (KG- から始まる番号) を教えてください。")],
        [U("天気を知りたい"), A("どの都市の天気をお調べしましょうか？")],
        [U("5,000円以上で送料無料ですか？"), A("はい、国内は5,000円以上のご注文で送料無料です。")],
        [U("How much is shipping?"), A("Shipping in Japan is free on orders from ¥5,000; below that it is ¥550.")],
        [U("My package is late"), A("Sorry about that! What's the order number? It starts with KG-.")],
        [U("Can you write me a poem about cats?"),
         A("Sorry, I can only help with your orders, support tickets and the weather.")],
        [U("thanks, that's all"), A("You're welcome! Have a nice day.")],
        [U("What's the weather like?"), A("Happy to check: which city?")],
        [U("Can I return a mug I got two weeks ago?"),
         A("Yes, returns are accepted within 30 days of delivery. Send me the order number (KG-...) and I'll open "
           "a refund ticket.")],
        [U("Who won the baseball game last night?"),
         A("Sorry, I can only help with your orders, support tickets and the weather.")],
        [U("I want to open a ticket"), A("Sure. What's the order number (it starts with KG-), and what went wrong?")],
    ],
}


def tools() -> list[dict]:
    """The three tools in OpenAI's shape, as `openai.pydantic_function_tool` writes them."""
    return [pydantic_function_tool(model, name=name) for name, model in MODELS.items()]


def messages(kind: str, number: int, turns: list[dict]) -> list[dict]:
    """One conversation as chat messages, checked: calls valid and grounded, every call answered in time."""
    where = f"{kind} #{number + 1}"
    out, unanswered, said = [{"role": "system", "content": SYSTEM_PROMPT}], [], ""
    for position, turn in enumerate(turns):
        if "call" in turn:
            MODELS[turn["call"]].model_validate(turn["arguments"])  # raises, naming the field, when invalid
            for key in COPIED:
                if key in turn["arguments"] and turn["arguments"][key] not in said:
                    raise SystemExit(f"{where}: {key}={turn['arguments'][key]!r} appears nowhere earlier")
            call_id = f"call_{kind[:2]}{number:02d}{position:02d}"
            if out[-1]["role"] != "assistant" or "tool_calls" not in out[-1]:
                out.append({"role": "assistant", "tool_calls": []})
            out[-1]["tool_calls"].append({"id": call_id, "type": "function", "function": {
                "name": turn["call"], "arguments": json.dumps(turn["arguments"], ensure_ascii=False)}})  # fmt: skip
            unanswered.append(call_id)
        elif "result" in turn:
            if not unanswered:
                raise SystemExit(f"{where}: a result answers no call")
            out.append({"role": "tool", "tool_call_id": unanswered.pop(0), "content": turn["result"]})
        else:
            if unanswered:
                raise SystemExit(f"{where}: {len(unanswered)} call(s) have no result before the next turn")
            out.append(turn)
            said += "\n" + turn["content"]
    if out[1]["role"] != "user" or out[-1]["role"] != "assistant":
        raise SystemExit(f"{where}: a conversation starts with the customer and ends with the assistant")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    rng, splits = random.Random(SEED), {"train": [], "test": []}
    for kind, conversations in CONVERSATIONS.items():
        if len(conversations) % TEST_SHARE:
            raise SystemExit(f"{kind}: {len(conversations)} conversations; write a multiple of {TEST_SHARE}")
        group = [messages(kind, number, turns) for number, turns in enumerate(conversations)]
        rng.shuffle(group)
        splits["test"] += group[: len(group) // TEST_SHARE]
        splits["train"] += group[len(group) // TEST_SHARE :]
    definitions = tools()
    for split, rows in splits.items():
        rng.shuffle(rows)
        lines = [json.dumps({"messages": m, "tools": definitions}, ensure_ascii=False) + "\n" for m in rows]
        (out / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
        print(f"{split}: {len(rows)} examples -> {out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
