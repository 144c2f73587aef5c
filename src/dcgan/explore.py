"""`dcgan explore`: a local web page over trained models, on top of the same functions as the CLI.

Each view posts its inputs to a JSON endpoint that runs the command's own report function
(`sample_sheet`, `arithmetic_report`, `walk_report`, ...) into a fresh result folder and answers with
its report and the URLs of the files it wrote: the page shows them and offers them for download, so
what the page shows is byte for byte what the command writes. Networks are loaded once per source
(`checkpoint.Loaded`) and every request that runs them holds one lock: requests are serialised,
and G and D stay in eval mode. Bad input is a 4xx answer whose message the page shows: the command's
own DCGANError, or a check here on the request's shape.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dcgan.checkpoint import Loaded
from dcgan.directions import directions_report, strip
from dcgan.errors import DCGANError
from dcgan.forget import forget as forget_report
from dcgan.latent import arithmetic_report, direction_report, load_direction, sample_sheet, walk_report
from dcgan.neighbours import neighbours_report
from dcgan.outputs import write_image
from dcgan.projection import project_report
from dcgan.saliency import feature_map_report, guided_backprop_report
from dcgan.visualize import square_columns

__all__ = ["explorer", "serving"]  # public: dcgan.NAME

PAGE = Path(__file__).parent / "explorer"  # index.html, app.js, style.css: no build step, no CDN
MAX_BODY = 64 * 1024  # bytes of a JSON request
MAX_UPLOAD = 16 * 2**20  # bytes of an uploaded image (decoded with the training decoder's limits)
KEEP = 256  # result folders kept; older ones are deleted
SAMPLE_GRID = re.compile(r"(step_\d{8}|final)\.png")  # the grids a run writes into RUN/samples
MAX_ROWS = 5000  # metrics rows sent to the training view (evenly thinned beyond)


class BadRequest(Exception):
    """A request the page can correct: answered 400 with its message."""


class Explorer:
    """The sources, loaded once, and the results of the requests so far."""

    def __init__(self, sources: list[str | Path], data: str | None = None, data_dir: str | None = None):
        if not sources:
            raise DCGANError("give at least one run directory, checkpoint or exported .safetensors")
        self.sources = [Loaded(s) for s in sources]
        self.data, self.data_dir = data, data_dir
        self.lock = threading.Lock()
        self.results = Path(tempfile.mkdtemp(prefix="dcgan-explore-"))
        self.ids = itertools.count()

    def source(self, body: dict) -> Loaded:
        index = integer(body, "source", 0, len(self.sources) - 1, default=0)
        return self.sources[index]

    def run(self, name: str, work) -> dict:
        """work(out folder) -> report, serialised; the folder's files become URLs."""
        rid = f"{next(self.ids):06d}"
        out = self.results / rid
        with self.lock:
            report = work(out)
        old = sorted(p for p in self.results.iterdir() if p.name < f"{int(rid) - KEEP:06d}")
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
        files = sorted(p.relative_to(self.results).as_posix() for p in self.results.glob(f"{rid}/**/*")
                       if p.is_file()) if out.exists() else []
        return {"command": name, "report": report, "files": {Path(f).name: f"/results/{f}" for f in files}}

    def result_path(self, url, what: str = "direction") -> Path:
        """A file of an earlier result, named by the URL this server gave for it."""
        parts = url.split("/") if isinstance(url, str) else []
        if len(parts) != 4 or parts[:2] != ["", "results"] or not parts[2].isdigit() \
                or not (self.results / parts[2] / parts[3]).is_file():
            raise BadRequest(f"{what} must be the URL of a {what} file made on this page (the last {KEEP} "
                             f"results are kept), got {json.dumps(url)}")
        return self.results / parts[2] / parts[3]

    def latents(self, body: dict) -> Path | None:
        """The latents file (from /api/project) whose rows the sample numbers index, if any."""
        url = body.get("latents")
        return None if url is None else self.result_path(url, "latents")

    @contextlib.contextmanager
    def upload(self, raw: bytes) -> Iterator[Path]:
        """The request's bytes in a file for the length of the request, removed after it."""
        if not raw:
            raise BadRequest("no image was sent: choose an image file")
        folder = self.results / "uploads"
        folder.mkdir(exist_ok=True)
        path = folder / f"{next(self.ids):06d}"  # a name of ours: the user's file name is never used
        path.write_bytes(raw)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def describe(self) -> list[dict]:
        rows = []
        for i, s in enumerate(self.sources):
            c = s.generator.config
            rows.append({"index": i, "path": str(s.path), "step": s.generator.origin["step"],
                         "nz": c.nz, "image_size": c.image_size, "channels": c.channels,
                         "discriminator": s.discriminator is not None,
                         "data": (s.config or {}).get("data")})
        return rows


# ---- request checks ------------------------------------------------------------------------

def integer(body: dict, name: str, lo: int, hi: int, default: int | None = None) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be an integer from {lo} to {hi}, got {json.dumps(value)}")
    return value


def number(body: dict, name: str, lo: float, hi: float, default: float) -> float:
    value = body.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be a number from {lo:g} to {hi:g}, got {json.dumps(value)}")
    return float(value)


def indices(body: dict, name: str, required: bool = True) -> list[int] | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{name} is empty: click samples on the sheet to fill it")
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise BadRequest(f"{name} must hold sample numbers (integers from 0), got {json.dumps(v)}")
    return value


def choice(body: dict, name: str, options: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in options:
        raise BadRequest(f"{name} must be one of {', '.join(options)}, got {json.dumps(value)}")
    return value


# ---- the app --------------------------------------------------------------------------------

def explorer(sources: list[str | Path], *, data: str | None = None, data_dir: str | None = None) -> Starlette:
    """The explorer's web app (an ASGI app: serve it with uvicorn, or test it with Starlette's
    TestClient)."""
    ex = Explorer(sources, data, data_dir)

    def endpoint(handler):
        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            try:
                body = await _body(request)
                return JSONResponse(await run_in_threadpool(handler, body))
            except (BadRequest, DCGANError) as e:
                return JSONResponse({"error": " ".join(str(e).split())}, status_code=400)
        return wrapped

    @endpoint
    def sources(body: dict) -> dict:
        return {"sources": ex.describe()}

    @endpoint
    def sheet(body: dict) -> dict:
        src = ex.source(body)
        n = integer(body, "n", 1, 256, default=64)
        seed = integer(body, "seed", 0, 2**32 - 1, default=0)
        start = integer(body, "start", 0, 2**31 - 1 - n, default=0)
        latents = ex.latents(body)
        result = ex.run("sample", lambda out: sample_sheet(src, out=out / "samples.png", n=n, seed=seed,
                                                           start=start, numbered=True, latents=latents))
        shown = result["report"]["images"]  # fewer than n past the end of a latents file
        result["layout"] = {"columns": square_columns(shown), "n": shown, "start": start, "seed": seed}
        return result

    @endpoint
    def arithmetic(body: dict) -> dict:
        src = ex.source(body)
        a, b, c = (indices(body, k) for k in "abc")
        seed = integer(body, "seed", 0, 2**32 - 1, default=0)
        noise = number(body, "noise", 0.0, 10.0, default=0.25)
        latents = ex.latents(body)
        return ex.run("arithmetic", lambda out: arithmetic_report(src, out=out, a=a, b=b, c=c, seed=seed,
                                                                  noise=noise, latents=latents))

    @endpoint
    def direction(body: dict) -> dict:
        """`dcgan arithmetic --from B --to A --targets C --frames`: mean z(A) - mean z(B) added in steps."""
        src = ex.source(body)
        start, end = indices(body, "from"), indices(body, "to")
        targets = indices(body, "targets", required=False)
        seed = integer(body, "seed", 0, 2**32 - 2, default=0)
        steps = integer(body, "steps", 2, 64, default=7)
        scale = number(body, "scale", -10.0, 10.0, default=1.0)
        n = integer(body, "n", 1, 16, default=4)
        latents = ex.latents(body)
        return ex.run("direction", lambda out: direction_report(
            src, out=out, start=start, end=end, targets=targets, seed=seed, steps=steps, scale=scale, n=n,
            latents=latents, frames=True))

    @endpoint
    def walk(body: dict) -> dict:
        src = ex.source(body)
        through = indices(body, "through")
        if len(through) < 2:
            raise BadRequest("a walk needs at least 2 samples: click two or more on the sheet")
        seed = integer(body, "seed", 0, 2**32 - 1, default=0)
        steps = integer(body, "steps", 1, 64, default=8)
        mode = choice(body, "mode", ("slerp", "linear"), "slerp")
        latents = ex.latents(body)
        return ex.run("walk", lambda out: walk_report(src, out=out, through=through, seed=seed, steps=steps,
                                                      mode=mode, gif=True, latents=latents, frames=True))

    @endpoint
    def feature_maps(body: dict) -> dict:
        src = ex.source(body)
        net = choice(body, "net", ("g", "d"), "g")
        seed = integer(body, "seed", 0, 2**32 - 1, default=0)
        index = integer(body, "index", 0, 2**31 - 1, default=0)
        latents = ex.latents(body)
        return ex.run("feature-maps", lambda out: feature_map_report(src, out=out, net=net, seed=seed,
                                                                     index=index, latents=latents))

    @endpoint
    def forget(body: dict) -> dict:
        """Boxes drawn on the sheet -> `dcgan forget`'s figures (forget.png, forget_curve.png) and report,
        and the boxes file it read."""
        src = ex.source(body)
        boxes = body.get("boxes")
        if not isinstance(boxes, dict) or not boxes.get("boxes"):
            raise BadRequest("boxes is empty: choose 'box' and drag boxes around the object on the sheet")
        drop = body.get("drop", "positive")
        if not isinstance(drop, str):
            raise BadRequest(f"drop must be positive, threshold:T or top:K, got {json.dumps(drop)}")
        n = integer(body, "n", 0, 64, default=8)
        seed = integer(body, "seed", 0, 2**32 - 1, default=0)
        erase = choice(body, "erase", ("global", "local"), "global")
        curve = choice(body, "curve", ("auto", "none"), "auto")
        with ex.upload(json.dumps(boxes).encode()) as file:

            def work(out: Path) -> dict:
                report = forget_report(src, boxes=file, out=out, drop=drop, n=n, seed=seed, erase=erase,
                                       curve=curve)
                shutil.copyfile(file, out / "boxes.json")  # what `dcgan forget --boxes` reads
                return report

            return ex.run("forget", work)

    @endpoint
    def guided_backprop(body: dict) -> dict:
        src = ex.source(body)
        filters = integer(body, "filters", 1, 32, default=6)
        top = integer(body, "top", 1, 16, default=4)
        return ex.run("guided-backprop", lambda out: guided_backprop_report(
            src, data=ex.data, data_dir=ex.data_dir, out=out, filters=filters, top=top, max_images=2000))

    @endpoint
    def neighbours(body: dict) -> dict:
        src = ex.source(body)
        n = integer(body, "n", 1, 32, default=8)
        k = integer(body, "k", 1, 16, default=5)
        seed = integer(body, "seed", 0, 2**32 - 1, default=0)
        return ex.run("neighbours", lambda out: neighbours_report(src, data=ex.data, data_dir=ex.data_dir,
                                                                  out=out, n=n, k=k, seed=seed))

    @endpoint
    def training(body: dict) -> dict:
        """A run directory's curves, sample grids and warnings so far (the page polls it)."""
        i = integer(body, "source", 0, len(ex.sources) - 1, default=0)
        run = ex.sources[i].path
        if not run.is_dir():
            raise BadRequest(f"{run} is a single file: the training view needs the run directory")
        rows = _metrics_rows(run / "metrics.jsonl")
        grids = sorted(p.name for p in (run / "samples").glob("*.png") if SAMPLE_GRID.fullmatch(p.name))
        warnings = [{"step": r.get("step"), "warning": w} for r in rows for w in r.get("warnings") or []]
        if len(rows) > MAX_ROWS:
            rows = rows[:: -(-len(rows) // MAX_ROWS)] + rows[-1:]
        return {"run": str(run), "rows": rows, "warnings": warnings,
                "grids": [{"name": g, "url": f"/runs/{i}/samples/{g}"} for g in grids]}

    @endpoint
    def directions(body: dict) -> dict:
        src = ex.source(body)
        method = choice(body, "method", ("sefa", "pca", "svm"), "sefa")
        seed = integer(body, "seed", 0, 2**32 - 1, default=0)
        k = integer(body, "k", 1, 64, default=8)
        positive = indices(body, "positive") if method == "svm" else None
        negative = indices(body, "negative") if method == "svm" else None
        return ex.run("directions", lambda out: directions_report(
            src, out=out, method=method, k=k, seed=seed, positive=positive, negative=negative,
            n=2000))

    @endpoint
    def move(body: dict) -> dict:
        """One sample moved along a direction found by /api/directions: G(z + a * sigma * u)."""
        src = ex.source(body)
        seed = integer(body, "seed", 0, 2**32 - 1, default=0)
        index = integer(body, "index", 0, 2**31 - 1, default=0)
        amount = number(body, "sigmas", -10.0, 10.0, default=0.0)
        path = ex.result_path(body.get("direction"))
        g = src.generator

        def work(out: Path) -> dict:
            u, sigma, record = load_direction(path, g.config.nz)
            image = strip(g, u, sigma, g.latent(seed, [index], "cpu"), torch.tensor([amount]))
            out.mkdir(parents=True)
            write_image(image[0, 0].add(1).div(2).clamp(0, 1), out / "moved.png")
            return {"seed": seed, "index": index, "sigmas": amount, "direction": record.get("index"),
                    "method": record.get("method")}

        return ex.run("move", work)

    def uploaded(handler):
        """An endpoint whose request body is an image file and whose settings are in the query."""
        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            try:
                query = {k: int(v) if v.isdigit() else v for k, v in request.query_params.items()}
                with ex.upload(await _read_limited(request, MAX_UPLOAD)) as path:
                    return JSONResponse(await run_in_threadpool(handler, query, path))
            except (BadRequest, DCGANError) as e:
                return JSONResponse({"error": " ".join(str(e).split())}, status_code=400)
        return wrapped

    @uploaded
    def project(query: dict, path: Path) -> dict:
        """An uploaded image projected into G's z: `dcgan project`'s files."""
        src = ex.source(query)
        steps = integer(query, "steps", 1, 5000, default=300)
        restarts = integer(query, "restarts", 1, 16, default=2)
        return ex.run("project", lambda out: project_report(src, [path], out=out, steps=steps,
                                                            restarts=restarts))

    @uploaded
    def d_image(query: dict, path: Path) -> dict:
        """D's score and feature maps of an uploaded image: `dcgan feature-maps --net d --image`."""
        src = ex.source(query)
        return ex.run("feature-maps", lambda out: feature_map_report(src, out=out, net="d", image=path))

    def run_file(request: Request) -> Response:
        """A sample grid of a served run: only RUN/samples/step_N.png or final.png."""
        rid, name = request.path_params["index"], request.path_params["name"]
        if not (rid.isdigit() and int(rid) < len(ex.sources) and SAMPLE_GRID.fullmatch(name)):
            raise HTTPException(404, "no such file")
        path = ex.sources[int(rid)].path / "samples" / name
        if not path.is_file():
            raise HTTPException(404, "no such file")
        return FileResponse(path)

    def result_file(request: Request) -> Response:
        rid, name = request.path_params["rid"], request.path_params["name"]
        path = ex.results / rid / name
        if not (rid.isdigit() and name in {p.name for p in (ex.results / rid).glob("*")} and path.is_file()):
            raise HTTPException(404, "no such result")
        return FileResponse(path)

    def page(request: Request) -> Response:
        return FileResponse(PAGE / "index.html")

    routes = [Route("/", page), Route("/results/{rid}/{name}", result_file),
              Route("/api/sources", sources, methods=["GET", "POST"]),
              Route("/api/sheet", sheet, methods=["POST"]),
              Route("/api/arithmetic", arithmetic, methods=["POST"]),
              Route("/api/walk", walk, methods=["POST"]),
              Route("/api/feature-maps", feature_maps, methods=["POST"]),
              Route("/api/training", training, methods=["POST"]),
              Route("/api/guided-backprop", guided_backprop, methods=["POST"]),
              Route("/api/forget", forget, methods=["POST"]),
              Route("/api/neighbours", neighbours, methods=["POST"]),
              Route("/api/directions", directions, methods=["POST"]),
              Route("/api/move", move, methods=["POST"]),
              Route("/api/project", project, methods=["POST"]),
              Route("/api/direction", direction, methods=["POST"]),
              Route("/api/d-image", d_image, methods=["POST"]),
              Route("/runs/{index}/samples/{name}", run_file),
              Mount("/static", StaticFiles(directory=PAGE), name="static")]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.explorer = ex
    return app


@contextlib.contextmanager
def serving(sources: list[str | Path], *args: str, timeout: float = 120.0) -> Iterator[str]:
    """`dcgan explore SOURCES ARGS` as a subprocess on a free port of this machine, for scripts and
    tests: yields the page's URL once the server answers, and stops the server on exit. A server
    that exits or does not answer within `timeout` seconds is a DCGANError carrying its stderr."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "dcgan", "explore", *map(str, sources), *map(str, args),
               "--port", str(port)]
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a full pipe would stall the server
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(url + "api/sources", timeout=2).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        server.kill()
                        server.wait()
                        log.seek(0)
                        raise DCGANError(f"dcgan explore did not start within {timeout:g} s: "
                                         f"{log.read().strip() or 'no error message'}") from None
                    time.sleep(0.2)
            yield url
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()


def _metrics_rows(path: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl that parse (the last one may be half-written while training)."""
    rows = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append({k: _plain(v) for k, v in row.items()})
    return rows


def _plain(value):
    """A metrics value as JSON can carry it: a non-finite number (a diverged loss) becomes null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if value is None or isinstance(value, int | str) else str(value)


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request's body, refused as soon as it passes `limit` bytes (never read whole first)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"the image has {int(declared):,} bytes: at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the image has more than {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _body(request: Request) -> dict:
    if request.method == "GET":
        return {}
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"request of {len(raw)} bytes: at most {MAX_BODY}")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
