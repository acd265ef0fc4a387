"""A Celery fleet calling Anthropic and OpenAI through Sluice: the project's first user, done
right. Run a Sluice server (`cargo run -p sluice-server -- --config examples/sluice.toml`), a
Redis for Celery, and any number of workers:

    pip install "./clients/python[http,celery]" anthropic openai
    export SLUICE_ADDR=127.0.0.1:50051 ANTHROPIC_API_KEY=... OPENAI_API_KEY=...
    celery -A tasks worker --concurrency 16          # in examples/celery; as many hosts as you like

then queue work from anywhere: `tasks.summarize.delay(text)`.

Every call of every worker books its slot on Sluice first, inside the provider's real request and
token budgets. A task waits in its worker at most 2 s for a slot; when the slot is further off
(or one worker's 429 cooled the whole fleet down) the task goes back to the queue with
`countdown` = Sluice's exact `retry_after`, and the worker takes other work meanwhile.
"""

import os
from urllib.parse import urlsplit

import anthropic
import openai
from celery import Celery

from sluice.calls import provider_of
from sluice.celery import SluiceTask

app = Celery("tasks", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))


# The services of examples/sluice.toml, one per model family: dated model names map onto them.
FAMILIES = ("claude-sonnet", "claude-haiku", "gpt-4o-mini", "gpt-4o")


def service(method: str, url: str, body: dict) -> str:
    model = body["model"]
    family = next((f for f in FAMILIES if model.startswith(f)), model)
    return f"{provider_of(urlsplit(url).hostname or '')}/{family}"


class LlmTask(SluiceTask):
    sluice_max_wait = 2.0  # the longest a worker slot waits for a Sluice slot
    sluice_transport_options = {"service": service}


@app.task(base=LlmTask, bind=True)
def summarize(self, text: str) -> str:
    """Anthropic: booked on `anthropic/<model>` (input and output tokens apart)."""
    claude = self.sdk(anthropic.Anthropic)
    reply = claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=400,
                                   messages=[{"role": "user", "content": f"Summarize:\n\n{text}"}])
    return reply.content[0].text


@app.task(base=LlmTask, bind=True)
def classify(self, text: str) -> str:
    """OpenAI: booked on `openai/<model>`."""
    client = self.sdk(openai.OpenAI)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", max_tokens=5,
        messages=[{"role": "user", "content": f"One word for the topic of: {text}"}])
    return reply.choices[0].message.content
