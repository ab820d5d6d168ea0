"""A real embeddings server for the tests: sentence-transformers models behind the OpenAI
schema (``POST /v1/embeddings``) and Voyage's (``POST /voyage/v1/embeddings``), on uvicorn.

    python tests/embedding_server.py --model minilm=PATH --model tiny=PATH --ready-fd N

It binds 127.0.0.1 on a free port itself (no race for the port), loads the models, writes
the port to file descriptor N and serves. With ``--api-key-env NAME`` every embeddings
request must carry ``Authorization: Bearer <the value of NAME>``; a wrong key gets 401 with
the key it got echoed in the message (harsher than OpenAI, which echoes part of it), so a
client that prints the server's words leaks it. It answers ``data`` in reverse order, as
any server may: a client must order by ``index``. It reports model ``<name>-served`` (the
name a server gives may differ from the one asked for).

The test steers it over HTTP: ``POST /admin/faults`` ``{"status": 429, "count": 2,
"retry_after": "0", "after": 0}`` makes the ``count`` requests after the next ``after`` ones
answer ``status`` (``count`` null: all of them); ``GET /admin/stats`` gives the request count
and what each request asked; ``POST /admin/reset`` clears both. A text over
``--max-input-tokens`` tokens gets 400, as a hosted API refuses an input too long.
"""

from __future__ import annotations

import argparse
import os
import socket

# The server runs in its own process: these imports are its own.
import uvicorn
from sentence_transformers import SentenceTransformer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class State:
    def __init__(self, models: dict, api_key: str | None, max_input_tokens: int):
        self.models, self.api_key, self.max_input_tokens = models, api_key, max_input_tokens
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.log: list[dict] = []  # per request: route, status, inputs, input_type, dimensions
        self.fault: dict | None = None

    def fault_for_this_request(self) -> dict | None:
        fault = self.fault
        if fault is None:
            return None
        if fault["after"] > 0:
            fault["after"] -= 1
            return None
        if fault["count"] is not None:
            if fault["count"] <= 0:
                return None
            fault["count"] -= 1
        return fault


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status, headers=headers)


def make_app(state: State) -> Starlette:
    async def embeddings(request: Request, voyage: bool) -> JSONResponse:
        state.requests += 1
        body = await request.json()
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        entry = {"route": "voyage" if voyage else "openai", "inputs": len(texts or []), "status": 200,
                 "input_type": body.get("input_type"), "texts": texts,
                 "dimensions": body.get("output_dimension" if voyage else "dimensions")}
        state.log.append(entry)
        response = refusal(request, body, texts, entry)
        if response is not None:
            return response
        model = state.models[body["model"]]
        vectors = model.encode(texts, prompt="", convert_to_numpy=True, normalize_embeddings=False)
        if entry["dimensions"]:
            vectors = vectors[:, : entry["dimensions"]]
        tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
        data = [{"object": "embedding", "index": i, "embedding": vector.tolist()} for i, vector in enumerate(vectors)]
        usage = {"total_tokens": tokens} if voyage else {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data[::-1], "model": f"{body['model']}-served", "usage": usage})

    def refusal(request: Request, body: dict, texts, entry: dict) -> JSONResponse | None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        fault = state.fault_for_this_request()
        if state.api_key is not None and given != state.api_key:
            response = error(401, f"Incorrect API key provided: {given}")
        elif fault is not None:
            response = error(fault["status"], "injected fault", {"Retry-After": fault["retry_after"]}
                             if fault.get("retry_after") is not None else None)
        elif body.get("model") not in state.models:
            response = error(404, f"The model '{body.get('model')}' does not exist")
        elif not texts or not all(isinstance(text, str) for text in texts):
            response = error(400, "input must be a string or a list of strings")
        elif too_long(state.models[body["model"]], texts, state.max_input_tokens):
            response = error(400, f"an input is longer than {state.max_input_tokens} tokens")
        else:
            return None
        entry["status"] = response.status_code
        return response

    async def openai(request: Request) -> JSONResponse:
        return await embeddings(request, voyage=False)

    async def voyage(request: Request) -> JSONResponse:
        return await embeddings(request, voyage=True)

    async def faults(request: Request) -> JSONResponse:
        fault = await request.json()
        state.fault = {"after": 0, "count": None, "retry_after": None, **fault}
        return JSONResponse(state.fault)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse({"requests": state.requests, "log": state.log})

    async def reset(request: Request) -> JSONResponse:
        state.reset()
        return JSONResponse({"requests": 0})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "models": sorted(state.models)})

    return Starlette(routes=[
        Route("/v1/embeddings", openai, methods=["POST"]),
        Route("/voyage/v1/embeddings", voyage, methods=["POST"]),
        Route("/admin/faults", faults, methods=["POST"]),
        Route("/admin/stats", stats, methods=["GET"]),
        Route("/admin/reset", reset, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])


def too_long(model, texts: list[str], limit: int) -> bool:
    return any(len(ids) > limit for ids in model.tokenizer(texts, truncation=False)["input_ids"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=FOLDER of a sentence-transformers model")
    parser.add_argument("--api-key-env", help="the variable holding the key every request must carry")
    parser.add_argument("--max-input-tokens", type=int, default=512)
    parser.add_argument("--ready-fd", type=int, required=True, help="where the port is written once serving")
    args = parser.parse_args()
    models = {}
    for item in args.model:
        name, _, folder = item.partition("=")
        models[name] = SentenceTransformer(folder, device="cpu", local_files_only=True)
    api_key = os.environ[args.api_key_env] if args.api_key_env else None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until uvicorn accepts them
    with os.fdopen(args.ready_fd, "w") as ready:
        ready.write(f"{sock.getsockname()[1]}\n")
    config = uvicorn.Config(make_app(State(models, api_key, args.max_input_tokens)), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
