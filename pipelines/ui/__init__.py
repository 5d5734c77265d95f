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


SESSION_COOKIE = "ganpipe_ui_session"
FORM_FIELD = "csrf"  # the per-session form token every state-changing request carries
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_SEED = 2**32 - 1  # numpy's SeedSequence takes 0..2**32-1 as one word


def create_app(s: Settings):
    """The FastAPI application for `s`; every page and image route, the token check, the form-origin
    check, error pages."""
    import secrets

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, RedirectResponse, Response
    from fastapi.templating import Jinja2Templates
    from starlette.exceptions import HTTPException

    from gan_core.metrics.suite import MIN_SAMPLES

    app = FastAPI(title="ganpipe", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    batches = views.Batches(s.cfg, s.tracking_uri, s.address, s.roots[0])
    app.state.batches = batches
    secret = secrets.token_bytes(32)  # form tokens are HMACs of the session under it: valid for this process

    def form_token(session: str) -> str:
        return hmac.new(secret, session.encode(), "sha256").hexdigest()

    def run_link(run_id: str) -> str | None:
        """The run's page in MLflow's UI (#/experiments/EXP/runs/RUN); None without one (shown as text)."""
        if not s.mlflow_url:
            return None
        exp = views.experiment_of(s.tracking_uri, run_id)
        return f"{s.mlflow_url.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"

    def mlflow_home() -> str | None:
        """MLflow's runs table of the training view (its GenAI view otherwise opens first)."""
        if not s.mlflow_url:
            return None
        exp = views.experiment_id(s.tracking_uri, s.cfg.mlflow.experiment)
        base = s.mlflow_url.rstrip("/")
        return f"{base}/#/experiments/{exp}/runs?workflowType=machine_learning" if exp else base

    def page(request: Request, name: str, http_status: int = 200, **ctx):
        ctx = {"title": name.split(".")[0].title(), "mlflow_home": mlflow_home(), "run_link": run_link,
               "tracking_uri": s.tracking_uri, "roots": s.roots, "error": None, "refresh": None,
               "csrf": form_token(request.state.session), "max_try": views.MAX_TRY, **ctx}
        return templates.TemplateResponse(request, name, ctx, status_code=http_status)

    def refuse(request: Request, code: int, text: str):
        return page(request, "base.html", code, error=text, nav=None, title=str(code))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """The token (when set), then, for anything that changes state, proof that the request comes
        from ganpipe's own page: the browser's Sec-Fetch-Site and Origin, and the session's form token
        (checked by each form handler)."""
        request.state.session = request.cookies.get(SESSION_COOKIE) or secrets.token_hex(16)
        if s.token:
            given = (request.query_params.get("token") or request.cookies.get(COOKIE) or
                     request.headers.get("authorization", "").removeprefix("Bearer ").strip())
            if not given or not hmac.compare_digest(given, s.token):
                text = "a token is required: open the address `ganpipe ui` printed (it carries ?token=...)" \
                    if not given else "the token does not match the one `ganpipe ui` was started with"
                return HTMLResponse(f"<h1>401</h1><p>{text}</p>", status_code=401)
        if request.method not in SAFE_METHODS:
            site = request.headers.get("sec-fetch-site")
            origin = request.headers.get("origin")
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if (site is not None and site not in ("same-origin", "none")) or (origin is not None and origin != own):
                return refuse(request, 403, f"refused: this request came from another site ({origin or site}); "
                                            "batches start only from ganpipe's own pages")
        response = await call_next(request)
        if request.cookies.get(SESSION_COOKIE) != request.state.session:
            response.set_cookie(SESSION_COOKIE, request.state.session, httponly=True, samesite="strict")
        if s.token and request.query_params.get("token"):
            response.set_cookie(COOKIE, s.token, httponly=True, samesite="strict")
        return response

    async def form_of(request: Request) -> dict:
        """The posted form's fields (blank ones kept); one with no valid form token is refused."""
        fields = {k: v[0] for k, v in parse_qs((await request.body()).decode(), keep_blank_values=True).items()}
        given = fields.pop(FORM_FIELD, "")
        if not hmac.compare_digest(given, form_token(request.state.session)):
            raise views.Forbidden("refused: the form's token is missing or out of date; reload the page and "
                                  "submit it again")
        return fields

    status_of = {views.NotFound: 404, views.Forbidden: 403}

    def code_of(e: UserError) -> int:
        return next((c for k, c in status_of.items() if isinstance(e, k)), 400)

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError):
        return refuse(request, code_of(e), str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return refuse(request, e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        where = ", ".join(".".join(str(x) for x in err.get("loc", ())[1:]) or "request" for err in e.errors())
        return refuse(request, 400, f"{where}: not a value this page takes")

    def _int(value: str | None, name: str, default: int | None = None, low: int | None = None,
             high: int | None = None) -> int | None:
        if value is None:
            return default
        if not value.strip():
            raise UserError(f"{name}: give a value")
        try:
            n = int(value)
        except ValueError:
            raise UserError(f"{name}: {value!r} is not a whole number") from None
        if (low is not None and n < low) or (high is not None and n > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise UserError(f"{name}: {n} must be {bounds}")
        return n

    def _seed(value: str | None) -> int:
        return _int(value, "seed", 0, 0, MAX_SEED)

    def _root(value: str) -> int:
        try:
            return _int(value, "data folder", None, 0, len(s.roots) - 1)
        except UserError as e:
            raise views.NotFound(f"no configured data folder {value!r} ({e})") from None

    @app.get("/")
    def home():
        return RedirectResponse("/models")

    @app.get("/models", response_class=HTMLResponse)
    def models(request: Request, seed: str | None = None):
        seed_n = _seed(seed)
        vs = views.versions(s.tracking_uri)
        pairs: dict[str, list] = {}
        for alias in ("champion", "challenger"):
            for v in vs:
                if alias in v.aliases:
                    pairs.setdefault(v.name, []).append((alias, v))
        return page(request, "models.html", versions=vs, pairs=pairs, seed=seed_n, nav="/models", title="Models")

    @app.get("/grid/{name}/{version}.png")
    def grid(name: str, version: str, seed: str | None = None):
        seed_n = _seed(seed)
        v = views.find_version(s.tracking_uri, name, version)
        return Response(views.grid_png(v.uri, s.tracking_uri, seed_n), media_type="image/png")

    @app.get("/try", response_class=HTMLResponse)
    def try_it(request: Request, model: str | None = None, version: str | None = None, classes: str = "",
               count: str | None = None, seed: str | None = None):
        vs = views.versions(s.tracking_uri)
        form = {"model": model or (vs[0].name if vs else ""), "version": version, "classes": classes,
                "count": "4" if count is None else count, "seed": "0" if seed is None else seed}

        def show(code: int = 200, **kw):
            return page(request, "try.html", code, versions=vs, form=form, nav="/try", title="Try it",
                        **{"images": None, **kw})

        if not vs:
            return show(error="no generator is registered yet")
        if version is None:
            champ = [v for v in vs if v.name == form["model"] and "champion" in v.aliases]
            form["version"] = (champ or vs)[0].version
            return show()
        try:  # a bad value: the page again with the values as given and the message
            v = views.find_version(s.tracking_uri, form["model"], version)
            n = _int(form["count"], "per class", None, 1, views.MAX_TRY)
            chosen = views.parse_classes(classes, views.class_names(v.uri, s.tracking_uri))
            if len(chosen) * n > views.MAX_TRY:
                raise UserError(f"{len(chosen)} classes x {n} per class = {len(chosen) * n} images: at most "
                                f"{views.MAX_TRY} images a draw")
            images = views.try_images(s.cfg, v.uri, s.tracking_uri, chosen, n, _seed(form["seed"]))
        except UserError as e:
            return show(code_of(e), error=str(e))
        return show(images=images)

    @app.get("/datasets", response_class=HTMLResponse)
    def datasets(request: Request):
        found = views.datasets(s.roots)
        paths = {d.path.resolve() for d in found}
        recorded = [(v, p) for v in views.versions(s.tracking_uri) for p in v.datasets
                    if Path(p).resolve() not in paths]
        return page(request, "datasets.html", datasets=found, recorded=recorded, nav="/datasets", title="Datasets")

    @app.get("/datasets/{root}/{rel:path}", response_class=HTMLResponse)
    def dataset(request: Request, root: str, rel: str, label: str | None = None, order: str = "asc"):
        page_arg = request.query_params.get("page")  # `page` is this module's page renderer
        ds = views.find_dataset(s.roots, _root(root), rel)
        names = ds.manifest.get("class_names") or []
        lab = None if label == "" else _int(label, "label", None, 0, max(0, len(names) - 1))
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
    def files(root: str, rel: str):
        from fastapi.responses import FileResponse

        path = views.confined(s.roots, _root(root), rel)
        if not path.is_file():
            raise views.NotFound(f"{rel!r}: no such file")
        return FileResponse(path)

    BATCH_FIELDS = ("model", "name", "rows", "labels", "seed", "filter", "min_confidence")
    FILTERS = {"": "none", "drs": "discriminator rejection sampling", "confidence": "verifier confidence at least"}

    def batch_page_of(request: Request, form: dict, code: int = 200, error: str | None = None):
        return page(request, "batch.html", code, versions=views.versions(s.tracking_uri), form=form,
                    address=s.address, nav="/batch", title="Batch", error=error, batches=batches.all(),
                    elsewhere=views.generate_runs(s.tracking_uri), filters=FILTERS, min_rows=MIN_SAMPLES)

    @app.get("/batch", response_class=HTMLResponse)
    def batch_page(request: Request):
        vs = views.versions(s.tracking_uri)
        champ = [v for v in vs if "champion" in v.aliases]
        form = {"model": (champ or vs)[0].uri if vs else "", "name": "", "rows": "1000", "labels": "balanced",
                "seed": "0", "filter": "", "min_confidence": ""}
        return batch_page_of(request, form)

    def start_batch(form: dict, replace: bool = False):
        """Check every field of the form (a blank one is refused, not defaulted) and start the batch."""
        from ..stages.generate import check_rows
        from ..stages.generate.labels import label_counts

        missing = [f for f in BATCH_FIELDS if f not in form]
        if missing:
            raise UserError(f"{missing[0]}: missing from the form")
        vs = views.versions(s.tracking_uri)
        v = next((v for v in vs if v.uri == form["model"]), None)
        if v is None:
            raise views.NotFound(f"model: {form['model']!r} is not a registered version")
        name = form["name"].strip()
        if not name:
            raise UserError("name: give the dataset a name")
        try:
            check_name(name, "the dataset name")  # the rule every name reaching a path follows
        except ValueError as e:
            raise UserError(f"name: {e}") from None
        labels = form["labels"].strip()
        if not labels:
            raise UserError("labels: give balanced, proportional or counts such as 0=500,3=2000")
        explicit = "=" in labels
        rows = None if explicit and not form["rows"].strip() else _int(form["rows"], "rows", None, 1)
        names = views.class_names(v.uri, s.tracking_uri)
        prior = views._loaded(v.uri, s.tracking_uri).meta.label_prior
        counts = label_counts(labels, rows, names, prior)  # the CLI's own rule: one clear error
        check_rows(sum(counts) if counts else rows)  # generate's own minimum, before anything is written
        seed = _seed(form["seed"])
        if form["filter"] not in FILTERS:
            raise UserError(f"filter: {form['filter']!r} is not one of {', '.join(repr(k) for k in FILTERS)}")
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
        if replace:
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        elif out.exists() and any(out.iterdir()):
            raise UserError(f"name: {out} already holds files; choose another name")
        return batches.start(v.uri, rows, labels, seed, rejection, min_conf, out, f"0/{name}")

    @app.post("/batch", response_class=HTMLResponse)
    async def batch_start(request: Request):
        fields = await form_of(request)
        form = {"model": "", "name": "", "rows": "", "labels": "", "seed": "", "filter": "", "min_confidence": "",
                **fields}
        try:
            b = start_batch(fields)
        except UserError as e:
            return batch_page_of(request, form, code_of(e), str(e))
        return RedirectResponse(f"/batch/{quote(b.id)}", status_code=303)

    @app.post("/batch/{batch_id}/{action}", response_class=HTMLResponse)
    async def batch_action(request: Request, batch_id: str, action: str):
        await form_of(request)
        b = batches.get(batch_id)
        if action == "cancel":
            batches.cancel(b.id)
            return RedirectResponse(f"/batch/{quote(b.id)}", status_code=303)
        if action not in ("resume", "replace"):
            raise views.NotFound(f"{action!r}: a batch can be cancelled, resumed or replaced")
        if b.status() in ("running", "finished"):
            raise UserError(f"batch {b.id} is {b.status()}; only a failed or cancelled batch can be {action}d")
        form = {"model": b.model, "name": b.out.name, "rows": "" if b.rows is None else str(b.rows),
                "labels": b.labels, "seed": str(b.seed),
                "filter": "drs" if b.rejection else "confidence" if b.min_confidence is not None else "",
                "min_confidence": "" if b.min_confidence is None else str(b.min_confidence)}
        if action == "resume":  # the same request into the same folder: generate finishes what is missing
            new = batches.start(b.model, b.rows, b.labels, b.seed, b.rejection, b.min_confidence, b.out, b.key)
        else:
            new = start_batch(form, replace=True)
        return RedirectResponse(f"/batch/{quote(new.id)}", status_code=303)

    @app.get("/batch/{batch_id}", response_class=HTMLResponse)
    def batch_status(request: Request, batch_id: str):
        b = batches.get(batch_id)
        status = b.status()
        phase, done, total = b.phase()
        card = None
        if status == "finished":
            ds = views.find_dataset(s.roots, 0, b.key.split("/", 1)[1])
            card = views.card_html(ds, f"/files/{ds.key}")
        return page(request, "job.html", b=b, status=status, phase=phase, done=done, total=total, card=card,
                    log=b.log_tail(), elapsed=b.elapsed(), nav="/batch", title=f"Batch {b.id}",
                    refresh=2 if status == "running" else None)

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
    for r in roots:  # a folder that does not exist yet is where datasets will appear
        if r.exists() and not r.is_dir():
            raise UserError(f"--data {r}: exists and is not a folder")
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
