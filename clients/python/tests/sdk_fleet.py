"""One process of the SDK fleet (tests/tests/python_sdk.rs): calls through the official `openai`
and `anthropic` SDKs, each built with Sluice's transport, against simulated providers. Half the
calls stream their answer (OpenAI's final usage chunk, Anthropic's usage events). Even processes
use the blocking SDK clients, odd ones the asyncio clients.

    python sdk_fleet.py <index> <calls per SDK>

Environment: SLUICE_ADDR, OPENAI_BASE_URL (http://127.0.0.1:<port>/v1), ANTHROPIC_BASE_URL,
PROMPT, MAX_TOKENS. Prints one JSON line: what completed. Exits non-zero on any failure.
"""

import asyncio
import json
import os
import sys

import anthropic
import openai

import sluice
import sluice.http

PROMPT = os.environ["PROMPT"]
MAX_TOKENS = int(os.environ["MAX_TOKENS"])
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-3-5-haiku"
# The SDKs retry 429s themselves: each retry is acquired through Sluice again.
RETRIES = 8


def openai_kwargs(streamed: bool) -> dict:
    kwargs = {"model": OPENAI_MODEL, "max_tokens": MAX_TOKENS,
              "messages": [{"role": "user", "content": PROMPT}]}
    if streamed:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    return kwargs


def anthropic_kwargs(streamed: bool) -> dict:
    kwargs = {"model": ANTHROPIC_MODEL, "max_tokens": MAX_TOKENS,
              "messages": [{"role": "user", "content": PROMPT}]}
    if streamed:
        kwargs["stream"] = True
    return kwargs


def check_text(text: str, what: str) -> None:
    if text != "ok":
        raise SystemExit(f"{what}: unexpected answer {text!r}")


def run_sync(calls: int) -> dict:
    sc = sluice.Client()
    oai = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-test",
                        max_retries=RETRIES,
                        http_client=sluice.http.client(sc, service="sim-openai/{model}"))
    claude = anthropic.Anthropic(base_url=os.environ["ANTHROPIC_BASE_URL"], api_key="test",
                                 max_retries=RETRIES,
                                 http_client=sluice.http.client(sc, service="sim-anthropic/{model}"))
    done = {"openai": 0, "anthropic": 0, "streamed": 0}
    for i in range(calls):
        streamed = i % 2 == 1
        if streamed:
            chunks = oai.chat.completions.create(**openai_kwargs(True))
            check_text("".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                       "openai stream")
            events = claude.messages.create(**anthropic_kwargs(True))
            check_text("".join(e.delta.text for e in events if e.type == "content_block_delta"),
                       "anthropic stream")
            done["streamed"] += 2
        else:
            answer = oai.chat.completions.create(**openai_kwargs(False))
            check_text(answer.choices[0].message.content, "openai")
            message = claude.messages.create(**anthropic_kwargs(False))
            check_text(message.content[0].text, "anthropic")
        done["openai"] += 1
        done["anthropic"] += 1
    return done


async def run_async(calls: int) -> dict:
    sc = sluice.AsyncClient()
    oai = openai.AsyncOpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-test",
                             max_retries=RETRIES,
                             http_client=sluice.http.async_client(sc, service="sim-openai/{model}"))
    claude = anthropic.AsyncAnthropic(
        base_url=os.environ["ANTHROPIC_BASE_URL"], api_key="test", max_retries=RETRIES,
        http_client=sluice.http.async_client(sc, service="sim-anthropic/{model}"))
    done = {"openai": 0, "anthropic": 0, "streamed": 0}

    async def one_openai(streamed: bool) -> None:
        if streamed:
            text = ""
            async for c in await oai.chat.completions.create(**openai_kwargs(True)):
                if c.choices:
                    text += c.choices[0].delta.content or ""
            check_text(text, "async openai stream")
            done["streamed"] += 1
        else:
            answer = await oai.chat.completions.create(**openai_kwargs(False))
            check_text(answer.choices[0].message.content, "async openai")
        done["openai"] += 1

    async def one_anthropic(streamed: bool) -> None:
        if streamed:
            text = ""
            async for e in await claude.messages.create(**anthropic_kwargs(True)):
                if e.type == "content_block_delta":
                    text += e.delta.text
            check_text(text, "async anthropic stream")
            done["streamed"] += 1
        else:
            message = await claude.messages.create(**anthropic_kwargs(False))
            check_text(message.content[0].text, "async anthropic")
        done["anthropic"] += 1

    # Two calls at a time per SDK: the asyncio client shares one channel between tasks.
    for i in range(0, calls, 2):
        batch = [one_openai(j % 2 == 1) for j in range(i, min(i + 2, calls))]
        batch += [one_anthropic(j % 2 == 1) for j in range(i, min(i + 2, calls))]
        await asyncio.gather(*batch)
    await sc.close()
    return done


def main() -> None:
    index, calls = int(sys.argv[1]), int(sys.argv[2])
    done = run_sync(calls) if index % 2 == 0 else asyncio.run(run_async(calls))
    print(json.dumps(done))


if __name__ == "__main__":
    main()
