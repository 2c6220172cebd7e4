"""Supervisor (networked): `prism-eval review` — ask a chat-completions API once, sign the verdict.

This is the only module of prism-eval that opens a network connection, and the run path never
imports it (a test walks the imports). It reads the bundle with the same intake as `run`, sends
every file whole (_prompt.py) to an OpenAI-compatible API — OpenRouter by default, at
temperature 0 with a JSON-schema response format — and signs what comes back (verdict.py).

Any failure after the first request — a timeout, a refused connection, a non-200 status after
the bounded retries, an answer that is not the schema's JSON — becomes a signed `held` verdict
that says why. Nothing but a schema-valid `allow` answer from the model yields `allow`.
"""

from __future__ import annotations

import http.client
import json
import math
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from prism_eval import __version__
from prism_eval.errors import EvaluatorError, PrismError
from prism_eval.supervisor.attest import SigningIdentity, parse_strict_json, resolve_signing_key
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.intake import Bundle, load_bundle
from prism_eval.supervisor.progress import say
from prism_eval.supervisor.review._prompt import PROMPT_VERSION, Prompt, build_prompt
from prism_eval.supervisor.review.verdict import (
    ANSWER_SCHEMA,
    Evidence,
    ReviewAnswer,
    SignedVerdict,
    Verdict,
    sign_verdict,
)

API_KEY_ENVS = ("PRISM_EVAL_REVIEW_API_KEY", "OPENROUTER_API_KEY")
API_KEY_SECRET_PATH = Path("/run/secrets/prism_eval_review_api_key")
MAX_REPLY_BYTES = 8 * 1024 * 1024
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class HttpReply:
    """One HTTP exchange's outcome: status, headers and the (capped) body."""

    status: int
    headers: Message
    body: bytes


@dataclass(frozen=True)
class ModelOutcome:
    """What asking the model came to: an answer, or the reason there is none."""

    answer: ReviewAnswer | None
    model: str | None
    attempts: int
    error: str | None


class _BadAnswer(Exception):
    """A 200 reply that is not a usable answer; carries the model id when the API gave one."""

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it would carry the API key to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def check_endpoint(url: str) -> None:
    """Refuse endpoints that would send the API key in clear text off this host."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return
    raise EvaluatorError(
        "review.insecure_endpoint",
        f"refusing to send the API key to {url!r}: use https (plain http only on loopback)",
    )


def read_api_key(api_key_file: Path | None, environ: dict[str, str]) -> str:
    """--api-key-file FILE, else $PRISM_EVAL_REVIEW_API_KEY, else $OPENROUTER_API_KEY, else the
    container secret. Never from the command line; the key is never logged or written."""
    env_name = next((name for name in API_KEY_ENVS if environ.get(name)), None)
    if api_key_file is None and env_name is None and API_KEY_SECRET_PATH.is_file():
        api_key_file = API_KEY_SECRET_PATH
    if api_key_file is not None:
        origin = str(api_key_file)
        try:
            text = api_key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EvaluatorError(
                "review.no_api_key", f"cannot read the API key file: {exc}"
            ) from exc
    elif env_name is not None:
        origin, text = f"${env_name}", environ[env_name]
    else:
        raise EvaluatorError(
            "review.no_api_key",
            "no API key for the reviewing model",
            hint=f"pass --api-key-file FILE or set ${API_KEY_ENVS[0]}",
        )
    key = text.strip()
    if not key or any(c.isspace() or not c.isprintable() for c in key):
        raise EvaluatorError(
            "review.bad_api_key", f"the API key from {origin} is empty or holds spaces or controls"
        )
    return key


def _read_capped(stream: IO[bytes], deadline: float) -> bytes:
    """Read a reply body in chunks, under a size cap and the request's deadline."""
    read = getattr(stream, "read1", stream.read)
    chunks: list[bytes] = []
    size = 0
    while chunk := read(_CHUNK_BYTES):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise _BadAnswer(f"the reply is larger than {MAX_REPLY_BYTES:,} bytes")
        if time.monotonic() > deadline:
            raise TimeoutError("the reply did not arrive within the timeout")
        chunks.append(chunk)
    return b"".join(chunks)


def post_json(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> HttpReply:
    """POST `body`; return any HTTP status as a reply. Transport failures raise OSError."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        response = opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpReply(exc.code, exc.headers, _read_capped(exc, deadline))
    with response:
        return HttpReply(response.status, response.headers, _read_capped(response, deadline))


def request_body(prompt: Prompt, config: EvalConfig) -> bytes:
    """The chat-completions request: the prompt, temperature 0, the verdict's JSON schema."""
    body: dict[str, Any] = {
        "model": config.review_model,
        "messages": prompt.messages,
        "temperature": 0,
        "max_tokens": config.review_max_answer_tokens,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "prism_review_verdict",
                "strict": True,
                "schema": ANSWER_SCHEMA,
            },
        },
    }
    if urlsplit(config.review_endpoint).hostname == "openrouter.ai":
        # Route only to providers that honour every parameter (the schema above all), instead
        # of one that silently ignores response_format.
        body["provider"] = {"require_parameters": True}
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def parse_reply(body: bytes) -> tuple[str, ReviewAnswer]:
    """The reporting model's id and its schema-valid answer, or `_BadAnswer` saying what is off."""
    try:
        data = parse_strict_json(body)
    except PrismError as exc:
        raise _BadAnswer(f"the API's reply is not JSON: {exc.message}") from exc
    if not isinstance(data, dict):
        raise _BadAnswer("the API's reply is not a JSON object")
    model = data.get("model") if isinstance(data.get("model"), str) and data["model"] else None
    if "error" in data:
        raise _BadAnswer(f"the API answered with an error: {str(data['error'])[:300]}", model)
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise _BadAnswer("the API's reply has no choices[0].message", model) from exc
    if not isinstance(message, dict):
        raise _BadAnswer("the API's reply has no choices[0].message", model)
    if message.get("refusal"):
        raise _BadAnswer(f"the model refused: {str(message['refusal'])[:300]}", model)
    if choice.get("finish_reason") == "length":
        raise _BadAnswer("the answer was cut off at max_tokens (review_max_answer_tokens)", model)
    content = message.get("content")
    if not isinstance(content, str):
        raise _BadAnswer("the model's answer has no text content", model)
    if model is None:
        raise _BadAnswer("the API did not report which model answered")
    try:
        return model, ReviewAnswer.model_validate(parse_strict_json(content.encode("utf-8")))
    except PrismError as exc:
        raise _BadAnswer(f"the model's answer is not JSON: {exc.message}", model) from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise _BadAnswer(
            f"the model's answer does not match the schema: {problems}", model
        ) from exc


def _retry_after_s(headers: Message) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None when absent or odd."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _clean(text: str, api_key: str) -> str:
    """Error text fit for a verdict: no API key, no control characters, bounded length."""
    text = text.replace(api_key, "[api key]")
    return "".join(c if c.isprintable() else " " for c in text)[:500]


def ask_model(
    prompt: Prompt,
    config: EvalConfig,
    api_key: str,
    sleep: Callable[[float], None] = time.sleep,
) -> ModelOutcome:
    """Send the prompt, retrying timeouts, 429 and 5xx with exponential backoff (honouring a
    Retry-After up to review_max_retry_after_s); every way of not getting an answer is an error
    text, never an exception and never an answer."""
    body = request_body(prompt, config)
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"prism-eval/{__version__}",
        "X-Title": "prism-eval review",
    }
    error = "no request was sent"
    for attempt in range(1, config.review_max_attempts + 1):
        wait_s = config.review_backoff_s * 2 ** (attempt - 1)
        try:
            reply = post_json(config.review_endpoint, body, headers, config.review_timeout_s)
        except _BadAnswer as exc:
            return ModelOutcome(None, None, attempt, _clean(str(exc), api_key))
        except (OSError, http.client.HTTPException, ValueError) as exc:  # timeouts: OSError
            reason = getattr(exc, "reason", exc)
            error = f"attempt {attempt}: {type(exc).__name__}: {reason}"
        else:
            if reply.status == 200:
                try:
                    model, answer = parse_reply(reply.body)
                except _BadAnswer as exc:
                    return ModelOutcome(None, exc.model, attempt, _clean(str(exc), api_key))
                return ModelOutcome(answer, model, attempt, None)
            snippet = reply.body[:300].decode("utf-8", "replace")
            error = f"attempt {attempt}: HTTP {reply.status}: {snippet}"
            if reply.status != 429 and not 500 <= reply.status < 600:
                return ModelOutcome(None, None, attempt, _clean(error, api_key))
            retry_after = _retry_after_s(reply.headers)
            if retry_after is not None and retry_after > config.review_max_retry_after_s:
                error += f" (the API asks to wait {retry_after:.0f}s, more than allowed)"
                return ModelOutcome(None, None, attempt, _clean(error, api_key))
            wait_s = max(wait_s, retry_after or 0.0)
        if attempt < config.review_max_attempts:
            say(f"review: {_clean(error, api_key)[:200]}; retrying in {wait_s:.1f}s")
            sleep(wait_s)
    attempts = config.review_max_attempts
    error = f"no answer after {attempts} attempts; last: {error}"
    return ModelOutcome(None, None, attempts, _clean(error, api_key))


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def review_loaded_bundle(
    bundle: Bundle, config: EvalConfig, api_key: str, identity: SigningIdentity
) -> SignedVerdict:
    """Review an extracted bundle and sign the verdict (allow, reject or held)."""
    prompt = build_prompt(bundle)
    common: dict[str, Any] = {
        "bundle_sha256": bundle.sha256,
        "requested_model": config.review_model,
        "endpoint": config.review_endpoint,
        "prompt_version": PROMPT_VERSION,
        "prompt_sha256": prompt.sha256,
        "prompt_bytes": prompt.size_bytes,
    }
    budget = config.review_prompt_max_bytes
    if prompt.size_bytes > budget:
        say(f"review: the prompt is {prompt.size_bytes:,} bytes, over {budget:,}: not sent")
        largest = sorted(bundle.files, key=lambda f: -f.bytes)[:5]
        decided: dict[str, Any] = {
            "decision": "reject",
            "reasons": [
                f"the bundle is too large to review: its prompt would be {prompt.size_bytes:,} "
                f"bytes, over the review budget of {budget:,} bytes (review_prompt_max_bytes); "
                "nothing was sent, and no file is ever cut to fit"
            ],
            "cited_rules": ["review.prompt_too_large"],
            "evidence": [Evidence(file=f.path, line=0, note=f"{f.bytes:,} bytes") for f in largest],
            "model": None,
            "attempts": 0,
            "error": None,
        }
    else:
        files = len(bundle.files)
        say(f"review: asking {config.review_model} ({prompt.size_bytes:,} bytes, {files} files)")
        outcome = ask_model(prompt, config, api_key)
        decided = {"model": outcome.model, "attempts": outcome.attempts, "error": outcome.error}
        if outcome.answer is None:
            error = outcome.error or "no answer"
            decided.update(
                decision="held", reasons=[error], cited_rules=[], evidence=[], error=error
            )
        else:
            decided.update(outcome.answer.model_dump())
    verdict = Verdict(reviewed_at=_utc_now(), **decided, **common)
    return sign_verdict(verdict, identity)


def review_bundle(
    source: Path,
    config: EvalConfig,
    *,
    key_path: Path | None,
    api_key_file: Path | None,
    environ: dict[str, str],
) -> SignedVerdict:
    """`prism-eval review`: intake the bundle as `run` does, ask the model, sign the verdict.

    The operator's own problems — no reviewer signing key (an ephemeral key could never be
    trusted by `run`), no API key, an insecure endpoint — raise before anything is sent; a
    bundle that fails intake raises its intake rejection (there is no digest to bind).
    """
    identity = resolve_signing_key(key_path, environ)
    if identity.mode == "ephemeral":
        raise EvaluatorError(
            "review.no_signing_key",
            "a verdict must be signed by a reviewer key that `run` can trust",
            hint="create one with `prism-eval keygen --out reviewer`, then pass --key reviewer.key",
        )
    check_endpoint(config.review_endpoint)
    api_key = read_api_key(api_key_file, environ)
    with tempfile.TemporaryDirectory(prefix="prism-eval-review-") as work:
        destination = Path(work) / "bundle"
        destination.mkdir(mode=0o700)
        bundle = load_bundle(source, destination, config.intake)
        return review_loaded_bundle(bundle, config, api_key, identity)
