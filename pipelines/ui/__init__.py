"""`ganpipe ui`: a small web application over the tracking store and the dataset folders.

Models (registered generators, their versions, aliases and the metric each was chosen by; champion
and challenger side by side on the same z and labels), Try it (a fresh grid from a version, classes
and seed, with the verifier's label and confidence under each image), Datasets (every dataset
`generate` wrote into the configured folders: card, counts, acceptance, evaluation; rows by class
sorted by the verifier's confidence) and Start a batch (a form that runs `generate` locally, or on
a cluster through the jobs module). Server-rendered pages (FastAPI and Jinja2), no build step; it
binds to 127.0.0.1 unless told otherwise, and needs a token on any other interface.
"""

import hmac
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote

from ..config import Config, check_name
from ..errors import UserError
from . import views

TOKEN_ENV = "GANPIPE_UI_TOKEN"
COOKIE = "ganpipe_ui_token"
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Settings:
    cfg: Config
    tracking_uri: str
    roots: "list[Path]"  # dataset folders
    token: str | None = None
    mlflow_url: str | None = None  # where links to runs go
    address: str | None = None  # a Ray cluster's dashboard: batches run there as jobs


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise UserError(f"--host {host}: serving beyond this machine needs a token (--token or {TOKEN_ENV})")


def create_app(s: Settings):
    """The FastAPI application for `s`; every page and image route, the token check, error pages."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, RedirectResponse, Response
    from fastapi.templating import Jinja2Templates
    from starlette.exceptions import HTTPException

    app = FastAPI(title="ganpipe", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    batches = views.Batches(s.cfg, s.tracking_uri, s.address)
    app.state.batches = batches

    def run_link(run_id: str) -> str:
        """The run's page in MLflow's UI (#/experiments/EXP/runs/RUN), or its runs:/ URI without one."""
        if not s.mlflow_url:
            return f"runs:/{run_id}"
        exp = views.experiment_of(s.tracking_uri, run_id)
        return f"{s.mlflow_url.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"

    def page(request: Request, name: str, http_status: int = 200, **ctx):
        ctx = {"title": name.split(".")[0].title(), "mlflow_url": s.mlflow_url, "run_link": run_link,
               "tracking_uri": s.tracking_uri, "roots": s.roots, "error": None, "refresh": None, **ctx}
        return templates.TemplateResponse(request, name, ctx, status_code=http_status)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if not s.token:
            return await call_next(request)
        given = (request.query_params.get("token") or request.cookies.get(COOKIE) or
                 request.headers.get("authorization", "").removeprefix("Bearer ").strip())
        if not given or not hmac.compare_digest(given, s.token):
            text = "a token is required: open the address `ganpipe ui` printed (it carries ?token=...)" if not given \
                else "the token does not match the one `ganpipe ui` was started with"
            return HTMLResponse(f"<h1>401</h1><p>{text}</p>", status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, s.token, httponly=True, samesite="strict")
        return response

    status_of = {views.NotFound: 404, views.Forbidden: 403}

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError):
        code = next((c for k, c in status_of.items() if isinstance(e, k)), 400)
        return page(request, "base.html", code, error=str(e), nav=None, title=f"{code}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return page(request, "base.html", e.status_code, error=str(e.detail), nav=None, title=str(e.status_code))

    def _int(value: str | None, name: str, default: int | None = None, low: int | None = None,
             high: int | None = None) -> int | None:
        if value in (None, ""):
            return default
        try:
            n = int(value)
        except ValueError:
            raise UserError(f"{name}: {value!r} is not a whole number") from None
        if (low is not None and n < low) or (high is not None and n > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise UserError(f"{name}: {n} must be {bounds}")
        return n

    @app.get("/")
    def home():
        return RedirectResponse("/models")

    @app.get("/models", response_class=HTMLResponse)
    def models(request: Request, seed: str | None = None):
        seed_n = _int(seed, "seed", 0)
        vs = views.versions(s.tracking_uri)
        pairs: dict[str, list] = {}
        for alias in ("champion", "challenger"):
            for v in vs:
                if alias in v.aliases:
                    pairs.setdefault(v.name, []).append((alias, v))
        return page(request, "models.html", versions=vs, pairs=pairs, seed=seed_n, nav="/models", title="Models")

    @app.get("/grid/{name}/{version}.png")
    def grid(name: str, version: str, seed: str | None = None):
        v = views.find_version(s.tracking_uri, name, version)
        return Response(views.grid_png(v.uri, s.tracking_uri, _int(seed, "seed", 0)), media_type="image/png")

    @app.get("/try", response_class=HTMLResponse)
    def try_it(request: Request, model: str | None = None, version: str | None = None, classes: str = "",
               count: str | None = None, seed: str | None = None):
        vs = views.versions(s.tracking_uri)
        form = {"model": model or (vs[0].name if vs else ""), "version": version, "classes": classes,
                "count": count or "4", "seed": seed or "0"}
        if not vs:
            return page(request, "try.html", versions=vs, form=form, images=None, nav="/try", title="Try it",
                        error="no generator is registered yet")
        if version is None:
            champ = [v for v in vs if v.name == form["model"] and "champion" in v.aliases]
            form["version"] = (champ or vs)[0].version
            return page(request, "try.html", versions=vs, form=form, images=None, nav="/try", title="Try it")
        v = views.find_version(s.tracking_uri, form["model"], version)
        n = _int(form["count"], "per class", 4, 1, 16)
        chosen = views.parse_classes(classes, views.class_names(v.uri, s.tracking_uri))
        if len(chosen) * n > views.MAX_TRY:
            raise UserError(f"{len(chosen)} classes x {n} per class: at most {views.MAX_TRY} images a draw")
        images = views.try_images(s.cfg, v.uri, s.tracking_uri, chosen, n, _int(seed, "seed", 0))
        return page(request, "try.html", versions=vs, form=form, images=images, nav="/try", title="Try it")

    @app.get("/datasets", response_class=HTMLResponse)
    def datasets(request: Request):
        found = views.datasets(s.roots)
        paths = {d.path.resolve() for d in found}
        recorded = [(v, p) for v in views.versions(s.tracking_uri) for p in v.datasets
                    if Path(p).resolve() not in paths]
        return page(request, "datasets.html", datasets=found, recorded=recorded, nav="/datasets", title="Datasets")

    @app.get("/datasets/{root}/{rel:path}", response_class=HTMLResponse)
    def dataset(request: Request, root: int, rel: str, label: str | None = None, order: str = "asc"):
        page_arg = request.query_params.get("page")  # `page` is this module's page renderer
        ds = views.find_dataset(s.roots, root, rel)
        names = ds.manifest.get("class_names") or []
        lab = _int(label, "label", None, 0, max(0, len(names) - 1))
        if order not in ("asc", "desc"):
            raise UserError(f"order: {order!r} is not asc or desc")
        p = _int(page_arg, "page", 0, 0)
        rows, total = views.rows(ds, lab, order, p)
        pages = max(1, -(-total // 48))
        file_url = f"/files/{ds.key}"
        run_id = views.generate_run_of(s.tracking_uri, str(ds.path))
        return page(request, "dataset.html", ds=ds, card=views.card_html(ds, file_url), rows=rows, total=total,
                    names=names, label=lab, order=order, page=p, pages=pages, run_id=run_id, nav="/datasets",
                    title=ds.path.name)

    @app.get("/files/{root}/{rel:path}")
    def files(root: int, rel: str):
        from fastapi.responses import FileResponse

        path = views.confined(s.roots, root, rel)
        if not path.is_file():
            raise views.NotFound(f"{rel!r}: no such file")
        return FileResponse(path)

    def batch_form(**kw) -> dict:
        return {"model": "", "name": "", "rows": "1000", "labels": "balanced", "seed": "0", "filter": "",
                "min_confidence": "", **kw}

    @app.get("/batch", response_class=HTMLResponse)
    def batch_page(request: Request):
        vs = views.versions(s.tracking_uri)
        champ = [v for v in vs if "champion" in v.aliases]
        form = batch_form(model=(champ or vs)[0].uri if vs else "")
        return page(request, "batch.html", versions=vs, form=form, address=s.address, nav="/batch", title="Batch")

    @app.post("/batch", response_class=HTMLResponse)
    async def batch_start(request: Request):
        from ..stages.generate.labels import label_counts

        fields = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        form = batch_form(**fields)
        vs = views.versions(s.tracking_uri)
        try:
            v = next((v for v in vs if v.uri == form["model"]), None)
            if v is None:
                raise views.NotFound(f"model: {form['model']!r} is not a registered version")
            name = form["name"].strip()
            try:
                check_name(name or None, "the dataset name")  # the rule every name reaching a path follows
            except ValueError as e:
                raise UserError(f"name: {e}") from None
            if not name:
                raise UserError("name: give the dataset a name")
            rows = _int(form["rows"], "rows", None, 1)
            names = views.class_names(v.uri, s.tracking_uri)
            labels = form["labels"].strip() or "balanced"
            if "=" not in labels and rows is None:
                raise UserError("rows: give a positive number of rows")
            prior = views._loaded(v.uri, s.tracking_uri).meta.get("label_prior")
            label_counts(labels, rows, names, prior)  # the CLI's own rule: one clear error
            seed = _int(form["seed"], "seed", 0, 0)
            rejection = "drs" if form["filter"] == "drs" else None
            min_conf = None
            if form["filter"] == "confidence":
                try:
                    min_conf = float(form["min_confidence"])
                except ValueError:
                    raise UserError(f"min_confidence: {form['min_confidence']!r} is not a number") from None
                if not 0 < min_conf <= 1:
                    raise UserError(f"min_confidence: {min_conf} must be in (0, 1]")
            out = s.roots[0] / name
            if out.exists() and any(out.iterdir()):
                raise UserError(f"name: {out} already holds files; choose another name")
            b = batches.start(v.uri, rows, labels, seed, rejection, min_conf, out, f"0/{name}")
        except UserError as e:
            code = next((c for k, c in status_of.items() if isinstance(e, k)), 400)
            return page(request, "batch.html", code, versions=vs, form=form, address=s.address, nav="/batch",
                        title="Batch", error=str(e))
        return RedirectResponse(f"/batch/{quote(b.id)}", status_code=303)

    @app.get("/batch/{batch_id}", response_class=HTMLResponse)
    def batch_status(request: Request, batch_id: str):
        b = batches.get(batch_id)
        status = b.status()
        done, total = b.progress()
        card = None
        if status == "finished":
            ds = views.find_dataset(s.roots, 0, b.key.split("/", 1)[1])
            card = views.card_html(ds, f"/files/{ds.key}")
        return page(request, "job.html", b=b, status=status, done=done, total=total, card=card, nav="/batch",
                    title=f"Batch {b.id}", refresh=2 if status in ("running", "submitted") else None)

    @app.on_event("shutdown")
    def _stop():
        batches.stop_all()

    return app


def serve(cfg: Config, host: str, port: int, data: list[str], token: str | None, mlflow: bool,
          address: str | None, say=print) -> None:
    """Run the UI until interrupted; with `mlflow`, also MLflow's own UI on the next port."""
    import subprocess
    import sys

    import uvicorn

    from ..services import tracking

    token = token or os.environ.get(TOKEN_ENV) or None
    check_binding(host, token)
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    tracking.check_reachable(uri)
    roots = [Path(d).expanduser().resolve() for d in (data or ["datasets"])]
    for r in roots:
        if not r.is_dir():
            raise UserError(f"--data {r}: no such folder")
    side = None
    mlflow_url = uri if uri.startswith("http") else None
    if mlflow:
        side = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
                                 "--port", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mlflow_url = f"http://{host}:{port + 1}"
    app = create_app(Settings(cfg, uri, roots, token, mlflow_url, address))
    shown = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    say(f"ui: {shown} (tracking {uri}; datasets in {', '.join(map(str, roots))})")
    if mlflow_url and side:
        say(f"ui: MLflow's UI at {mlflow_url}")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if side is not None:
            side.terminate()
