"""Fake GPU services: real HTTP servers on 127.0.0.1 that hold GPU memory like the engines they imitate.

Each engine speaks the API of the real one (docs/engines.md lists the facts relied on, with their
sources): `gaia` (gaia-core's /gpu/release and /gpu/reclaim, seed or v0.9 answers), `study`
(gaia-study's /study/gpu-ready and /study/gpu-release), `vllm` (/sleep?level=1|2, /wake_up,
/is_sleeping), `sglang` (/release_memory_occupation, /resume_memory_occupation), `ollama`
(/api/generate with keep_alive 0 to unload, an empty request to load, /api/ps), `llamacpp` (router
mode /models, /models/load, /models/unload) and `tenant` (holds memory, offers no API: an
unknown process for the orchestrator).

Memory is held in one of two ways:
- `torch`: really, `torch.empty(…, dtype=torch.uint8, device="cuda:N")` in blocks, freed with del
  and `torch.cuda.empty_cache()` (the CUDA context stays until the process exits);
- `fake-file`: by writing this process's own entry {pid, used_mib} (and the GPU's used_mib) into
  the fake telemetry backend's file, so the orchestrator's `fake` backend sees it.

Behaviours, per fake (command line, or POST /_fake/configure at run time):
- `frees`: the share of its memory a release step frees (full, none, partial = 0.5, or 0.25…),
  with `frees_for` overriding it per step (e.g. {"sleep:1": 0, "sleep:2": 1} for a vLLM whose
  level-1 sleep answers 200 and keeps its memory);
- `answer_delay_seconds`: every control call answers this much later;
- `free_delay_seconds`: memory is freed this long *after* the release answered;
- `reclaim`: ok, error (answers 500, allocates nothing) or oom (the re-allocation really fails);
- `busy_calls`: the next N release calls answer 409 (gaia-core mid-generation).
GET /_fake/state tells what it holds and every call and memory event, with wall-clock times.

    python bench/gpu_services.py vllm --name gaia-prime --hold-mib 32768 --memory torch --gpu 0
    python bench/gpu_services.py study --name gaia-study --hold-mib 16384 --inactive \\
        --memory fake-file --fake-file var/fake-gpu.json

It prints one JSON line {"name", "engine", "url", "pid"} once it listens, and runs until SIGTERM.
Needs no Django (only gaiaorch.telemetry's fake-file writer, which imports none).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
FRACTIONS = {"full": 1.0, "none": 0.0, "partial": 0.5}


# --- the HTTP server ---------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str  # as requested, query string included
    body: dict[str, Any]
    at: float = 0.0  # wall clock when it arrived
    status: int = 0


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    body: dict[str, Any]

    def arg(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[0]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: dict[str, Any] | list | str | None = None  # None: an empty body; str: text/plain


class FakeHttpServer:
    """A real HTTP server on 127.0.0.1 whose answers come from `handle`; every call is recorded.

    `busy_seconds` sums the time spent answering, so a benchmark can subtract the fakes' share.
    """

    def __init__(self, name: str, port: int = 0):
        self.name = name
        self.port = port
        self.calls: list[Call] = []
        self.busy_seconds = 0.0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]  # type: ignore[union-attr]
        return f"http://{host}:{port}"  # type: ignore[str-bytes-safe]

    def called(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    def start(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self.server.daemon_threads = True
        # A short poll interval: stop() waits for the serving loop to notice, once per interval.
        serve = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=self.name, daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()  # type: ignore[union-attr]
        self.server.server_close()  # type: ignore[union-attr]

    def answer(self, method: str, raw_path: str, body: dict[str, Any]) -> Reply:
        started = time.monotonic()
        call = Call(method, raw_path, body, at=time.time())
        with self.lock:
            self.calls.append(call)
        parts = urlsplit(raw_path)
        reply = self.handle(Request(method, parts.path, parse_qs(parts.query), body))
        call.status = reply.status
        with self.lock:
            self.busy_seconds += time.monotonic() - started
        return reply

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError


def _handler(fake: FakeHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"unparsed": raw.decode(errors="replace")}
            reply = fake.answer(self.command, self.path, body if isinstance(body, dict) else {"body": body})
            if reply.body is None:
                payload, kind = b"", "application/json"
            elif isinstance(reply.body, str):
                payload, kind = reply.body.encode(), "text/plain; charset=utf-8"
            else:
                payload, kind = json.dumps(reply.body).encode(), "application/json"
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (its timeout); nothing to answer

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args) -> None:
            pass

    return Handler


# --- GPU memory, held for real or written into the fake telemetry file ------------------------


# What a process that allocated once keeps until it exits, measured on the H200 (torch 2.11, CUDA 13)
CUDA_CONTEXT_MIB = 1542


class AllocationFailed(Exception):
    pass


class TorchMemory:
    """Memory really allocated on one GPU, in blocks so a share of it can be freed.

    The CUDA context (1,542 MiB for these fakes on an H200, torch 2.11 + CUDA 13) is made by the first
    allocation and stays until the process exits, as in a real engine; a fake that never allocates
    never touches the GPU.
    """

    BLOCK_MIB = 1024

    def __init__(self, gpu: int):
        import torch

        self.torch = torch
        self.device = f"cuda:{gpu}"
        self.blocks: list[tuple[Any, int]] = []

    @property
    def held_mib(self) -> int:
        return sum(mib for _, mib in self.blocks)

    def total_mib(self) -> int:
        return self.torch.cuda.mem_get_info(self.device)[1] // MIB

    def grow(self, mib: int, whole: bool = False) -> None:
        """Allocate `mib` more, in blocks (or in one piece), all or nothing."""
        added: list[tuple[Any, int]] = []
        try:
            while mib > 0:
                size = mib if whole else min(mib, self.BLOCK_MIB)
                added.append((self.torch.empty(size * MIB, dtype=self.torch.uint8, device=self.device), size))
                mib -= size
            self.torch.cuda.synchronize(self.device)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
            added.clear()
            self.torch.cuda.empty_cache()
            raise AllocationFailed(str(exc).splitlines()[0]) from None
        self.blocks.extend(added)

    def shrink(self, mib: int) -> None:
        if mib <= 0 or not self.blocks:
            return  # nothing to free: never create a CUDA context just to free nothing
        while mib > 0 and self.blocks:
            _, size = self.blocks.pop()
            mib -= size
        self.torch.cuda.synchronize(self.device)
        self.torch.cuda.empty_cache()

    def close(self) -> None:
        self.shrink(self.held_mib)


class FakeFileMemory:
    """This process's entry in the fake telemetry file: {pid, used_mib}, and the GPU's used_mib."""

    def __init__(self, path: Path, gpu: int, cuda_context_mib: int = CUDA_CONTEXT_MIB):
        self.path = path
        self.cuda_context_mib = cuda_context_mib
        self.gpu = gpu
        self.pid = os.getpid()
        self.held_mib = 0
        self.context_mib = 0  # made by the first allocation, kept until close(), as a CUDA context

    def total_mib(self) -> int:
        return self._entry(json.loads(self.path.read_text())["gpus"])["total_mib"]

    def _entry(self, gpus: list[dict[str, Any]]) -> dict[str, Any]:
        return next(entry for entry in gpus if entry["index"] == self.gpu)

    def _change(self, delta: int, context: int = 0) -> None:
        from gaiaorch.telemetry import update_fake

        def change(gpus: list[dict[str, Any]]) -> None:
            entry = self._entry(gpus)
            free = entry["total_mib"] - entry["used_mib"] - entry.get("reserved_mib", 0)
            if delta + context > free:
                raise AllocationFailed(f"out of memory: tried to allocate {delta} MiB, {free} MiB free")
            processes = [p for p in entry.setdefault("processes", []) if p["pid"] != self.pid]
            used = self.held_mib + self.context_mib + delta + context
            if used > 0:
                processes.append({"pid": self.pid, "used_mib": used})
            entry["processes"] = processes
            entry["used_mib"] += delta + context

        update_fake(self.path, change)
        self.held_mib += delta
        self.context_mib += context

    def grow(self, mib: int, whole: bool = False) -> None:
        self._change(mib, self.cuda_context_mib if mib > 0 and not self.context_mib else 0)

    def shrink(self, mib: int) -> None:
        self._change(-min(mib, self.held_mib))

    def close(self) -> None:
        self._change(-self.held_mib, -self.context_mib)


# --- behaviours and the engines ----------------------------------------------------------------


@dataclass
class Behaviour:
    hold_mib: int = 0  # what the service holds while active (its model, or its training job)
    frees: float = 1.0  # share of the memory held that a release step frees
    frees_for: dict[str, float] = field(default_factory=dict)  # per step, e.g. {"sleep:1": 0.0}
    answer_delay_seconds: float = 0.0
    free_delay_seconds: float = 0.0  # freed this long after the release answered
    reclaim: str = "ok"  # ok | error | oom
    busy_calls: int = 0  # the next N release calls answer 409

    def share(self, step: str) -> float:
        return self.frees_for.get(step, self.frees)


def fraction(value: Any) -> float:
    share = FRACTIONS.get(value, value) if isinstance(value, str) else value
    share = float(share)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a share of memory must be between 0 and 1, not {value!r}")
    return share


def behaviour_from(values: dict[str, Any], base: Behaviour | None = None) -> Behaviour:
    known = {f.name for f in fields(Behaviour)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown behaviour keys: {sorted(unknown)}")
    merged = {**asdict(base or Behaviour()), **values}
    merged["frees"] = fraction(merged["frees"])
    merged["frees_for"] = {step: fraction(share) for step, share in merged["frees_for"].items()}
    if merged["reclaim"] not in ("ok", "error", "oom"):
        raise ValueError(f"reclaim must be ok, error or oom, not {merged['reclaim']!r}")
    return Behaviour(**merged)


class FakeEngine(FakeHttpServer):
    """An engine holding GPU memory; subclasses map their API onto release and reclaim steps."""

    engine = "engine"
    routes: dict[tuple[str, str], str] = {}  # (method, path) -> method name

    def __init__(self, name: str, memory, behaviour: Behaviour, *, active: bool = True, port: int = 0):
        super().__init__(name, port)
        self.memory = memory
        self.behaviour = behaviour
        self.events: list[dict[str, Any]] = []
        self.memory_lock = threading.Lock()  # why: a delayed free and a reclaim must not interleave
        self.active = False
        if active:
            self._reclaim_memory("start")

    # ---- memory

    def _event(self, what: str, **data: Any) -> None:
        with self.lock:
            self.events.append({"what": what, "at": time.time(), "held_mib": self.memory.held_mib, **data})

    def _free(self, step: str, share: float) -> None:
        with self.memory_lock:
            mib = round(self.memory.held_mib * share)
            if mib:
                self.memory.shrink(mib)
            self._event("freed", step=step, mib=mib)

    def _reclaim_memory(self, step: str) -> str:
        """Allocate back up to hold_mib; the error text when the allocation fails ("" when it worked)."""
        with self.memory_lock:
            wanted = self.behaviour.hold_mib - self.memory.held_mib
            impossible = self.behaviour.reclaim == "oom" and step != "start"
            if impossible:
                wanted = self.memory.total_mib() + 1024  # more than the card has: a real failure
            try:
                if wanted > 0:
                    self.memory.grow(wanted, whole=impossible)
            except AllocationFailed as exc:
                self._event("allocation_failed", step=step, mib=wanted, error=str(exc))
                return str(exc)
            self.active = True
            self._event("allocated", step=step, mib=max(wanted, 0))
            return ""

    # ---- the two kinds of control call

    def release(self, step: str) -> tuple[bool, str]:
        """(done, why not): busy answers False; memory goes now or after free_delay_seconds."""
        self._pause()
        if self.behaviour.busy_calls > 0:
            self.behaviour.busy_calls -= 1
            return False, "busy: a generation is in progress"
        self.active = False
        share = self.behaviour.share(step)
        if self.behaviour.free_delay_seconds:
            timer = threading.Timer(self.behaviour.free_delay_seconds, self._free, (step, share))
            timer.daemon = True
            timer.start()
        else:
            self._free(step, share)
        return True, ""

    def reclaim(self, step: str) -> str:
        """The error of a failed reclaim, "" when the memory is back."""
        self._pause()
        if self.behaviour.reclaim == "error":
            self._event("reclaim_refused", step=step)
            return "reclaim failed: the engine could not be restarted"
        return self._reclaim_memory(step)

    def _pause(self) -> None:
        if self.behaviour.answer_delay_seconds:
            time.sleep(self.behaviour.answer_delay_seconds)

    # ---- HTTP

    def handle(self, request: Request) -> Reply:
        if request.path == "/_fake/state" and request.method == "GET":
            return Reply(200, self.state())
        if request.path == "/_fake/configure" and request.method == "POST":
            return self.configure(request.body)
        target = self.routes.get((request.method, request.path))
        if target is None:
            return Reply(404, {"detail": f"{self.engine} has no {request.method} {request.path}"})
        return getattr(self, target)(request)

    def configure(self, body: dict[str, Any]) -> Reply:
        """Replace behaviours; `held_mib` sets what is held now, `active` whether it counts as loaded."""
        values = dict(body)
        held = values.pop("held_mib", None)
        active = values.pop("active", None)
        try:
            self.behaviour = behaviour_from(values, self.behaviour)
        except (TypeError, ValueError) as exc:
            return Reply(400, {"detail": str(exc)})
        if held is not None:
            with self.memory_lock:
                try:
                    if held > self.memory.held_mib:
                        self.memory.grow(held - self.memory.held_mib)
                    elif held < self.memory.held_mib:
                        self.memory.shrink(self.memory.held_mib - held)
                except AllocationFailed as exc:
                    return Reply(507, {"detail": str(exc), **self.state()})
                self._event("configured", mib=held)
        if active is not None:
            self.active = bool(active)
        return Reply(200, self.state())

    def state(self) -> dict[str, Any]:
        with self.lock:
            calls = [{"method": c.method, "path": c.path, "status": c.status, "at": c.at} for c in self.calls]
            events = list(self.events)
        return {
            "name": self.name,
            "engine": self.engine,
            "pid": os.getpid(),
            "held_mib": self.memory.held_mib,
            "active": self.active,
            "behaviour": asdict(self.behaviour),
            "calls": calls,
            "events": events,
        }

    def health(self, request: Request) -> Reply:
        return Reply(200, {"status": "healthy"})


class GaiaCore(FakeEngine):
    """gaia-core: POST /gpu/release {reason?} and /gpu/reclaim; 409 while busy.

    Answers: seed `{success, message}`, v0.9 `{ok, message, state}`.
    """

    engine = "gaia"
    routes = {
        ("POST", "/gpu/release"): "gpu_release",
        ("POST", "/gpu/reclaim"): "gpu_reclaim",
        ("GET", "/health"): "health",
    }

    def __init__(self, *args, dialect: str = "v0.9", **kwargs):
        self.dialect = dialect
        super().__init__(*args, **kwargs)

    def _answer(self, status: int, done: bool, message: str, state: str) -> Reply:
        if self.dialect == "seed":
            return Reply(status, {"success": done, "message": message})
        return Reply(status, {"ok": done, "message": message, "state": state})

    def gpu_release(self, request: Request) -> Reply:
        done, why = self.release("release")
        if not done:
            return self._answer(409, False, why, "busy")
        return self._answer(200, True, "GPU released", "released")

    def gpu_reclaim(self, request: Request) -> Reply:
        error = self.reclaim("reclaim")
        if error:
            return self._answer(500, False, error, "released")
        return self._answer(200, True, "GPU reclaimed", "active")


class GaiaStudy(FakeEngine):
    """gaia-study: POST /study/gpu-ready allocates its training memory, /study/gpu-release frees it."""

    engine = "study"
    routes = {
        ("POST", "/study/gpu-ready"): "gpu_ready",
        ("POST", "/study/gpu-release"): "gpu_release",
        ("GET", "/health"): "health",
    }

    def gpu_ready(self, request: Request) -> Reply:
        error = self.reclaim("ready")
        if error:
            return Reply(500, {"ok": False, "message": error, "gpu_available": False})
        return Reply(200, {"ok": True, "message": "training may start", "gpu_available": True})

    def gpu_release(self, request: Request) -> Reply:
        done, why = self.release("release")
        if not done:
            return Reply(409, {"ok": False, "message": why, "gpu_available": True})
        return Reply(200, {"ok": True, "message": "released", "gpu_available": False})


class Vllm(FakeEngine):
    """vLLM's sleep mode (dev-mode server): POST /sleep?level=1|2, POST /wake_up, GET /is_sleeping.

    /sleep and /wake_up answer 200 with an empty body; the answer says nothing about memory.
    """

    engine = "vllm"
    routes = {
        ("POST", "/sleep"): "sleep",
        ("POST", "/wake_up"): "wake_up",
        ("GET", "/is_sleeping"): "is_sleeping",
        ("GET", "/health"): "empty",
    }

    def __init__(self, *args, **kwargs):
        self.sleeping = False
        super().__init__(*args, **kwargs)

    def empty(self, request: Request) -> Reply:
        return Reply(200, None)

    def sleep(self, request: Request) -> Reply:
        level = request.arg("level", "1")
        if level not in ("1", "2"):
            return Reply(500, "Internal Server Error")
        done, why = self.release(f"sleep:{level}")
        if not done:
            return Reply(503, {"detail": why})
        self.sleeping = True
        return Reply(200, None)

    def wake_up(self, request: Request) -> Reply:
        error = self.reclaim("wake_up")
        if error:
            return Reply(500, {"detail": error})
        self.sleeping = False
        return Reply(200, None)

    def is_sleeping(self, request: Request) -> Reply:
        return Reply(200, {"is_sleeping": self.sleeping})


class Sglang(FakeEngine):
    """SGLang: /release_memory_occupation and /resume_memory_occupation, body {tags?}, GET or POST."""

    engine = "sglang"
    routes = {
        **{(method, "/release_memory_occupation"): "release_occupation" for method in ("GET", "POST")},
        **{(method, "/resume_memory_occupation"): "resume_occupation" for method in ("GET", "POST")},
        ("GET", "/health"): "empty",
    }

    def empty(self, request: Request) -> Reply:
        return Reply(200, None)

    def release_occupation(self, request: Request) -> Reply:
        done, why = self.release("release_memory_occupation")
        return Reply(200, None) if done else Reply(400, {"error": {"message": why}})

    def resume_occupation(self, request: Request) -> Reply:
        error = self.reclaim("resume_memory_occupation")
        return Reply(400, {"error": {"message": error}}) if error else Reply(200, None)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Ollama(FakeEngine):
    """Ollama: POST /api/generate {model, keep_alive: 0} unloads, {model} loads, GET /api/ps lists."""

    engine = "ollama"
    routes = {
        ("POST", "/api/generate"): "generate",
        ("GET", "/api/ps"): "ps",
        ("GET", "/api/version"): "version",
        ("GET", "/"): "root",
    }

    def __init__(self, *args, model: str = "llama3.2", **kwargs):
        self.model = model
        super().__init__(*args, **kwargs)

    def root(self, request: Request) -> Reply:
        return Reply(200, "Ollama is running")

    def version(self, request: Request) -> Reply:
        return Reply(200, {"version": "0.0.0-fake"})

    def generate(self, request: Request) -> Reply:
        model = request.body.get("model", "")
        if model != self.model:
            return Reply(404, {"error": f"model '{model}' not found"})
        keep_alive = request.body.get("keep_alive")
        answer = {"model": model, "created_at": _utc_now(), "response": "", "done": True}
        if not request.body.get("prompt") and keep_alive in (0, "0", "0s", "0m"):
            done, why = self.release("unload")
            return Reply(200, {**answer, "done_reason": "unload"}) if done else Reply(503, {"error": why})
        error = self.reclaim("load")
        if error:
            return Reply(500, {"error": error})
        if request.body.get("prompt"):
            return Reply(200, {**answer, "response": "fake", "done_reason": "stop"})
        return Reply(200, {**answer, "done_reason": "load"})

    def ps(self, request: Request) -> Reply:
        if not self.active:
            return Reply(200, {"models": []})
        size = self.memory.held_mib * MIB
        loaded = {"name": self.model, "model": self.model, "size": size, "size_vram": size, "digest": "fake"}
        return Reply(200, {"models": [{**loaded, "details": {}, "expires_at": "2318-01-01T00:00:00Z"}]})


class LlamaCppRouter(FakeEngine):
    """llama.cpp llama-server in router mode: GET /models, POST /models/load|unload {model}."""

    engine = "llamacpp"
    routes = {
        ("GET", "/models"): "models",
        ("POST", "/models/load"): "load",
        ("POST", "/models/unload"): "unload",
        ("GET", "/health"): "health",
    }

    def __init__(self, *args, model: str = "ggml-org/gemma-3-4b-it-GGUF:Q4_K_M", **kwargs):
        self.model = model
        super().__init__(*args, **kwargs)

    def health(self, request: Request) -> Reply:
        return Reply(200, {"status": "ok"})

    def _unknown(self, request: Request) -> Reply | None:
        model = request.body.get("model", "")
        if model == self.model:
            return None
        return Reply(400, {"error": {"code": 400, "message": f"model {model!r} not found"}})

    def models(self, request: Request) -> Reply:
        status = "loaded" if self.active else "unloaded"
        return Reply(200, {"data": [{"id": self.model, "status": {"value": status}}]})

    def load(self, request: Request) -> Reply:
        refusal = self._unknown(request)
        if refusal:
            return refusal
        error = self.reclaim("load")
        return (
            Reply(500, {"error": {"code": 500, "message": error}}) if error else Reply(200, {"success": True})
        )

    def unload(self, request: Request) -> Reply:
        refusal = self._unknown(request)
        if refusal:
            return refusal
        done, why = self.release("unload")
        return Reply(200, {"success": True}) if done else Reply(503, {"error": {"code": 503, "message": why}})


class Tenant(FakeEngine):
    """A process holding GPU memory outside every service: no API but /health."""

    engine = "tenant"
    routes = {("GET", "/health"): "health"}


ENGINES: dict[str, type[FakeEngine]] = {
    engine.engine: engine for engine in (GaiaCore, GaiaStudy, Vllm, Sglang, Ollama, LlamaCppRouter, Tenant)
}


def make_memory(kind: str, gpu: int, fake_file: str | None):
    if kind == "torch":
        return TorchMemory(gpu)
    if kind == "fake-file":
        if not fake_file:
            raise SystemExit("--memory fake-file needs --fake-file PATH")
        return FakeFileMemory(Path(fake_file), gpu)
    raise SystemExit(f"unknown memory kind {kind!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=sorted(ENGINES))
    parser.add_argument("--name", help="the service it stands for (default: the engine)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--memory", choices=("torch", "fake-file"), default="torch")
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--fake-file")
    parser.add_argument("--hold-mib", type=int, default=0)
    parser.add_argument("--inactive", action="store_true", help="hold nothing until reclaimed (gaia-study)")
    parser.add_argument("--frees", default="full", help="full | none | partial | a share such as 0.25")
    parser.add_argument("--frees-for", action="append", default=[], metavar="STEP=SHARE")
    parser.add_argument("--answer-delay-seconds", type=float, default=0.0)
    parser.add_argument("--free-delay-seconds", type=float, default=0.0)
    parser.add_argument("--reclaim", choices=("ok", "error", "oom"), default="ok")
    parser.add_argument("--busy-calls", type=int, default=0)
    parser.add_argument("--dialect", choices=("seed", "v0.9"), default="v0.9", help="gaia only")
    parser.add_argument("--model", help="ollama / llamacpp: the model it serves")
    args = parser.parse_args(argv)

    behaviour = behaviour_from(
        {
            "hold_mib": args.hold_mib,
            "frees": args.frees,
            "frees_for": dict(item.split("=", 1) for item in args.frees_for),
            "answer_delay_seconds": args.answer_delay_seconds,
            "free_delay_seconds": args.free_delay_seconds,
            "reclaim": args.reclaim,
            "busy_calls": args.busy_calls,
        }
    )
    extra: dict[str, Any] = {}
    if args.engine == "gaia":
        extra["dialect"] = args.dialect
    if args.model and args.engine in ("ollama", "llamacpp"):
        extra["model"] = args.model
    memory = make_memory(args.memory, args.gpu, args.fake_file)
    fake = ENGINES[args.engine](
        args.name or args.engine, memory, behaviour, active=not args.inactive, port=args.port, **extra
    ).start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(
        json.dumps({"name": fake.name, "engine": fake.engine, "url": fake.url, "pid": os.getpid()}),
        flush=True,
    )
    stop.wait()
    fake.stop()
    memory.close()


if __name__ == "__main__":
    main()
