"""`ganpipe ui` in a real headless browser (Debian's Chromium through Playwright, no browser download):
the models page lists the champion beside the challenger, Try it draws the same images twice for the
same seed, the datasets page opens a dataset `generate` wrote and sorts its rows, the batch form starts
a batch and shows its card; bad input gets a clear message and the right HTTP status. Each page's
screenshot is saved (to $GANPIPE_UI_SCREENSHOTS when set, else the test's folder)."""
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from pipelines.config import load_config
from pipelines.services import contract
from pipelines.stages.register import register
from tests.helpers import run_cli
from tests.integration.services import free_port
from tests.integration.test_evaluate import _checkpoint

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MLFLOW_UI = "http://127.0.0.1:5000"  # where run links point (not served here)
FAST = ["eval.cas=false", "eval.samples=200", "generate.eval_samples=200"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, feature_cache, ray_local):
    """A tracking store with a champion and a challenger, a dataset folder with one dataset, and the UI
    served on a free port (in a thread of this process, as `ganpipe ui` serves it)."""
    from mlflow.tracking import MlflowClient

    from pipelines.ui import Settings, create_app

    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = load_config(None, [f"mlflow.tracking_uri={uri}", f"eval.cache_dir={feature_cache}", *FAST])
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("ganpipe")
    for seed in (0, 1):
        run = c.create_run(exp)
        folder = _checkpoint(tmp / f"ckpt{seed}", seed, run.info.run_id)
        c.log_artifact(run.info.run_id, str(folder / "state.pt"), contract.CHECKPOINT_DIR)
        register(cfg, run.info.run_id)
    data = tmp / "datasets"
    code, _, err = run_cli(_Capture(), "generate", "--model", "models:/gan-generator@champion", "--rows", "300",
                           "--out", str(data / "digits-300"), "--set", f"mlflow.tracking_uri={uri}",
                           "--set", "generate.rows_per_file=256", *[a for f in FAST for a in ("--set", f)])
    assert code == 0, err[-3000:]
    app = create_app(Settings(cfg, uri, [data], mlflow_url=MLFLOW_UI))
    url, server, thread = _serve(app)
    shots = Path(os.environ.get("GANPIPE_UI_SCREENSHOTS") or tmp / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    yield {"url": url, "uri": uri, "data": data, "shots": shots, "app": app}
    server.should_exit = True
    thread.join(10)


class _Capture:
    """run_cli's capsys in a module fixture (pytest's capsys is per test): the output is not read."""

    def readouterr(self):
        class Out:
            out, err = "", ""
        return Out()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _page(browser):
    return browser.new_page(viewport={"width": 1200, "height": 900})


def test_models_page_lists_champion_and_challenger_side_by_side(site, browser):
    page = _page(browser)
    page.goto(site["url"] + "/models")
    rows = page.locator("#versions tr").all_inner_texts()
    assert rows, page.content()[-3000:]
    assert any("champion" in r and r.split("\t")[1].strip() in ("1", "2") for r in rows), rows
    assert any("challenger" in r for r in rows), rows
    figures = page.locator("figure figcaption").all_inner_texts()
    assert [f.split(":")[0] for f in figures] == ["champion", "challenger"], figures
    for img in page.locator("figure img").all():  # both grids decoded by the browser
        assert img.evaluate("i => i.complete && i.naturalWidth") > 100
    from mlflow.tracking import MlflowClient

    link = page.locator("#versions a").first.get_attribute("href")  # the newest version's training run
    run_id = link.rsplit("/", 1)[1]
    exp = MlflowClient(tracking_uri=site["uri"]).get_run(run_id).info.experiment_id
    assert link == f"{MLFLOW_UI}/#/experiments/{exp}/runs/{run_id}"
    page.screenshot(path=str(site["shots"] / "models.png"), full_page=True)
    page.close()


def test_try_it_draws_the_same_images_for_the_same_seed(site, browser):
    page = _page(browser)
    page.goto(site["url"] + "/try")
    page.fill("#classes", "3,7")
    page.fill("#count", "4")
    page.fill("#seed", "11")
    page.click("#draw")
    first = page.locator("#images img").evaluate_all("imgs => imgs.map(i => i.src)")
    captions = page.locator("#images .tile").all_inner_texts()
    assert len(first) == 8 and all(c.strip().startswith("asked 3") for c in captions[:4]), captions
    assert all("seen" in c for c in captions)
    page.screenshot(path=str(site["shots"] / "try.png"), full_page=True)
    page.reload()
    assert page.locator("#images img").evaluate_all("imgs => imgs.map(i => i.src)") == first
    page.fill("#seed", "12")
    page.click("#draw")
    assert page.locator("#images img").evaluate_all("imgs => imgs.map(i => i.src)") != first
    page.close()


def test_datasets_page_opens_a_dataset_and_sorts_its_rows(site, browser):
    page = _page(browser)
    page.goto(site["url"] + "/datasets")
    assert "digits-300" in page.locator("#datasets").inner_text()
    page.click("text=digits-300")
    assert "Synthetic dataset: 300 images" in page.locator("#card").inner_text()
    from mlflow.tracking import MlflowClient

    made_by = page.get_attribute("#run-link", "href").rsplit("/", 1)[1]  # the generate run that wrote it
    run = MlflowClient(tracking_uri=site["uri"]).get_run(made_by)
    assert run.data.tags["ganpipe.stage"] == "generate" and run.data.params["out"] == str(site["data"] / "digits-300")
    conf = [float(x) for x in page.locator("#rows .tile").evaluate_all("t => t.map(e => e.dataset.confidence)")]
    assert len(conf) == 48 and conf == sorted(conf)  # the least convincing rows first
    page.select_option("#label", "3")
    page.select_option("#order", "desc")
    page.click("#show")
    tiles = page.locator("#rows .tile")
    conf = [float(x) for x in tiles.evaluate_all("t => t.map(e => e.dataset.confidence)")]
    assert len(conf) == 30 and conf == sorted(conf, reverse=True)  # 300 rows balanced: 30 of class 3
    assert all("label 3" in t for t in tiles.all_inner_texts())
    page.screenshot(path=str(site["shots"] / "dataset.png"), full_page=True)
    page.close()


def _wait_done(page, timeout_ms: int = 240_000) -> str:
    page.wait_for_function("['finished', 'failed', 'cancelled'].includes(document.querySelector('#status').innerText)",
                           timeout=timeout_ms)
    return page.locator("#status").inner_text()


def _serve(app) -> tuple[str, object, threading.Thread]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "the UI did not start"
        time.sleep(0.1)
    return f"http://127.0.0.1:{server.config.port}", server, thread


def test_the_batch_form_starts_a_batch_shows_its_phase_and_log_and_outlives_a_restart(site, browser):
    page = _page(browser)
    page.goto(site["url"] + "/batch")
    page.fill("#name", "from-the-page")
    page.fill("#rows", "200")
    page.fill("#labels", "0=120,5=80")
    page.click("#start")
    assert page.locator("#error").count() == 0, page.locator("#error").inner_text()
    page.wait_for_selector("#status")
    batch_id = page.url.rsplit("/", 1)[1]
    if page.locator("#status").inner_text() == "running":  # what it is doing, for how long, and a way out
        phase = page.locator("#phase").inner_text()
        assert phase.split(";")[0].split(":")[0] in ("starting", "writing", "evaluating", "writing the card"), phase
        assert " s so far" in phase and page.locator("#cancel").count() == 1
    assert _wait_done(page) == "finished", page.content()[-3000:]
    card = page.locator("#card").inner_text()
    assert "Synthetic dataset: 200 images" in card
    assert " s in all" in page.locator("#phase").inner_text()
    assert "generate: 200 rows" in page.locator("#log").inner_text()
    page.screenshot(path=str(site["shots"] / "batch.png"), full_page=True)
    page.click("#open")
    assert page.locator("#rows .tile").count() == 48
    # Another `ganpipe ui` on the same folders (a restart): the batch is listed and its page still opens.
    from pipelines.ui import Settings, create_app

    url, server, thread = _serve(create_app(Settings(load_config(None, [f"mlflow.tracking_uri={site['uri']}"]),
                                                     site["uri"], [site["data"]])))
    try:
        page.goto(url + "/batch")
        assert batch_id in page.locator("#batches").inner_text()
        assert "from-the-page" in page.locator("#generate-runs").inner_text()  # its MLflow generate run
        page.goto(f"{url}/batch/{batch_id}")
        assert page.locator("#status").inner_text() == "finished"
        assert "Synthetic dataset: 200 images" in page.locator("#card").inner_text()
    finally:
        server.should_exit = True
        thread.join(10)
    page.close()


def test_a_batch_cancelled_from_the_page_stops_and_resumes_from_there(site, browser):
    page = _page(browser)
    page.goto(site["url"] + "/batch")
    page.fill("#name", "cancelled")
    page.fill("#rows", "3000")
    page.click("#start")
    page.wait_for_selector("#cancel")
    first = page.url
    batch = site["app"].state.batches.get(first.rsplit("/", 1)[1])
    page.click("#cancel")
    assert _wait_done(page, 60_000) == "cancelled"
    assert batch.proc.poll() is not None  # its process has ended
    assert not (site["data"] / "cancelled" / "manifest.json").exists()
    (site["data"] / "cancelled").mkdir(exist_ok=True)  # (cancelled before it began writing, it may not exist)
    (site["data"] / "cancelled" / "stray.txt").write_text("left by hand")
    page.click("#replace")  # the folder deleted, the same request started again
    page.wait_for_url(lambda u: u != first)
    second = page.url
    assert not (site["data"] / "cancelled" / "stray.txt").exists()
    page.wait_for_selector("#cancel")
    page.click("#cancel")
    assert _wait_done(page, 60_000) == "cancelled"
    page.click("#resume")  # the same request into the same folder
    page.wait_for_url(lambda u: u not in (first, second))
    assert _wait_done(page) == "finished", page.content()[-3000:]
    assert "Synthetic dataset: 3000 images" in page.locator("#card").inner_text()
    page.close()


def test_try_it_keeps_the_form_on_a_bad_value(site, browser):
    page = _page(browser)
    page.goto(site["url"] + "/try")
    page.fill("#classes", "3,7")
    page.fill("#count", "40")
    page.fill("#seed", "-1")
    page.click("#draw")
    assert "seed: -1 must be between 0 and 4294967295" in page.locator("#error").inner_text() or \
        "at most 64 images a draw" in page.locator("#error").inner_text()
    assert [page.input_value(f) for f in ("#classes", "#count", "#seed")] == ["3,7", "40", "-1"]
    assert "At most 64 images a draw" in page.locator("#limit").inner_text()
    page.close()


def _session(url: str) -> tuple[requests.Session, str]:
    """A session as a browser on the page has it: its cookie and the batch form's token."""
    import re

    http = requests.Session()
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', http.get(url + "/batch").text)[1]
    return http, token


def test_bad_input_gets_a_clear_message_and_the_right_status(site):
    url = site["url"]
    r = requests.get(url + "/try", params={"model": "gan-generator", "version": "99"})
    assert r.status_code == 404 and "has no version &#39;99&#39;" in r.text
    r = requests.get(url + "/datasets/0/..%2F..%2Fetc")  # %2F: the browser would resolve a plain '..' itself
    assert r.status_code == 403 and "must stay inside the configured data folders" in r.text
    r = requests.get(url + "/files/0/..%2Fmlflow.db")
    assert r.status_code == 403 and "must stay inside" in r.text
    assert requests.get(url + "/datasets/0/no-such").status_code == 404
    r = requests.get(url + "/datasets/0/digits-300", params={"label": "x"})
    assert r.status_code == 400 and "label: &#39;x&#39; is not a whole number" in r.text
    # Every bad value is a page with its message and a 4xx, never a 500 or bare JSON.
    for path, params, code, needle in [
            ("/models", {"seed": "-1"}, 400, "seed: -1 must be between 0 and 4294967295"),
            ("/grid/gan-generator/1.png", {"seed": "-1"}, 400, "seed: -1 must be between 0"),
            ("/grid/gan-generator/1.png", {"seed": str(2**32)}, 400, "seed: 4294967296 must be between 0"),
            ("/datasets/abc/x", {}, 404, "no configured data folder &#39;abc&#39;"),
            ("/files/7/x", {}, 404, "no configured data folder &#39;7&#39;"),
            ("/try", {"model": "gan-generator", "version": "1", "seed": "-1"}, 400, "seed: -1 must be between"),
            ("/try", {"model": "gan-generator", "version": "1", "count": "7"}, 400,
             "10 classes x 7 per class = 70 images: at most 64 images a draw")]:
        r = requests.get(url + path, params=params)
        assert r.status_code == code and r.headers["content-type"].startswith("text/html") and needle in r.text, \
            (path, params, r.status_code, r.text[-800:])
    http, token = _session(url)
    version = "models:/gan-generator/1"
    for fields, needle in [({"rows": "0"}, "rows: 0 must be at least 1"),
                           ({"rows": "-3"}, "rows: -3 must be at least 1"),
                           ({"rows": ""}, "rows: give a value"),
                           ({"rows": "5"}, "--rows 5: a dataset needs at least 10 rows"),
                           ({"labels": "0=3,1=4", "rows": ""}, "--rows 7: a dataset needs at least 10 rows"),
                           ({"labels": ""}, "labels: give balanced"),
                           ({"seed": ""}, "seed: give a value"),
                           ({"seed": "-1"}, "seed: -1 must be between 0"),
                           ({"filter": "sharpest"}, "filter: &#39;sharpest&#39; is not one of"),
                           ({"name": "../up"}, "is not a valid name"),
                           ({"labels": "12=5"}, "no class &#39;12&#39;"),
                           ({"model": "models:/gan-generator/42"}, "is not a registered version")]:
        form = {"model": version, "name": "bad", "rows": "10", "labels": "balanced", "seed": "0", "filter": "",
                "min_confidence": "", "csrf": token, **fields}
        r = http.post(url + "/batch", data=form, allow_redirects=False)
        assert r.status_code in (400, 404) and needle in r.text, (fields, r.status_code, r.text[-1500:])
        assert f'value="{fields.get("name", "bad")}"' in r.text  # the form comes back with its values
    # Without the session's form token (or with another session's), nothing starts.
    form = {"model": version, "name": "bad", "rows": "10", "labels": "balanced", "seed": "0", "filter": "",
            "min_confidence": ""}
    for data, session in [(form, http), ({**form, "csrf": token}, requests.Session())]:
        r = session.post(url + "/batch", data=data, allow_redirects=False)
        assert r.status_code == 403 and "form&#39;s token is missing or out of date" in r.text, r.text[-800:]
    assert not (site["data"] / "bad").exists()


def test_another_site_cannot_start_a_batch(site, browser, tmp_path):
    """A page served from another local port auto-submits a complete batch form to the UI: the browser
    sends it, the UI refuses it (403) and no batch starts."""
    import http.server

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "index.html").write_text(
        f'<form id="f" method="post" action="{site["url"]}/batch">'
        + "".join(f'<input name="{k}" value="{v}">' for k, v in {
            "model": "models:/gan-generator/1", "name": "forged", "rows": "20", "labels": "balanced", "seed": "0",
            "filter": "", "min_confidence": "", "csrf": "0" * 64}.items())
        + '</form><script>document.getElementById("f").submit()</script>')
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(evil))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = _page(browser)
        with page.expect_response(lambda r: r.url == site["url"] + "/batch" and r.request.method == "POST") as got:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        assert got.value.status == 403
        page.wait_for_selector("#error")
        assert "came from another site" in page.locator("#error").inner_text()
        page.close()
    finally:
        server.shutdown()
    assert not (site["data"] / "forged").exists()
    assert all(b.out.name != "forged" for b in site["app"].state.batches.all())


def test_pages_fit_a_phone_and_run_links_follow_mlflow(site, browser):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    for path in ("/models", "/try?model=gan-generator&version=1&classes=3,7", "/datasets", "/datasets/0/digits-300",
                 "/batch"):
        page.goto(site["url"] + path)
        assert page.locator('meta[name="viewport"]').count() == 1
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, (path, wide)
    page.goto(site["url"] + "/models")
    page.screenshot(path=str(site["shots"] / "models-phone.png"), full_page=True)
    # With MLflow's UI known, its link opens the training runs table; without, run ids are plain text.
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=site["uri"]).get_experiment_by_name("ganpipe").experiment_id
    assert page.get_attribute("#mlflow", "href") == f"{MLFLOW_UI}/#/experiments/{exp}/runs?workflowType=machine_learning"
    page.close()
    from fastapi.testclient import TestClient

    from pipelines.ui import Settings, create_app

    bare = TestClient(create_app(Settings(load_config(None, []), site["uri"], [site["data"]]))).get("/models").text
    assert "href=\"runs:/" not in bare and 'id="mlflow"' not in bare and '<td class="run"><code' in bare


def test_a_token_is_required_beyond_this_machine(site, capsys):
    from fastapi.testclient import TestClient

    from pipelines.errors import UserError
    from pipelines.ui import Settings, check_binding, create_app

    with pytest.raises(UserError, match="needs a token"):
        check_binding("0.0.0.0", None)
    check_binding("127.0.0.1", None)
    # The command itself: refused before it serves anything.
    from tests.helpers import assert_one_line

    assert_one_line(*run_cli(capsys, "ui", "--host", "0.0.0.0", "--set", f"mlflow.tracking_uri={site['uri']}")[::2],
                    "--host 0.0.0.0: serving beyond this machine needs a token")
    app = create_app(Settings(load_config(None, []), site["uri"], [site["data"]], token="s3cret"))
    client = TestClient(app)
    assert client.get("/models").status_code == 401
    assert client.get("/models", params={"token": "wrong"}).status_code == 401
    ok = client.get("/models", params={"token": "s3cret"})
    assert ok.status_code == 200 and "gan-generator" in ok.text
    assert client.get("/datasets").status_code == 200  # the cookie set by the first visit


def test_the_command_serves_the_pages_and_mlflow_ui_beside_them(site, tmp_path):
    """`ganpipe ui --mlflow` as a user starts it, in a folder where nothing was generated yet: the pages
    on PORT (the datasets page saying where datasets will appear), MLflow's own UI on PORT + 1, and the
    run links pointing there; both stop with it."""
    import signal
    import subprocess
    import sys

    port = free_port()
    while True:  # PORT + 1 must be free as well
        with __import__("socket").socket() as s:
            if s.connect_ex(("127.0.0.1", port + 1)) != 0:
                break
        port = free_port()
    not_yet = tmp_path / "datasets"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ui", "--port", str(port), "--data",
                             str(not_yet), "--mlflow", "--set", f"mlflow.tracking_uri={site['uri']}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                pages = requests.get(f"http://127.0.0.1:{port}/models", timeout=2)
                ui = requests.get(f"http://127.0.0.1:{port + 1}/health", timeout=2)
                if pages.ok and ui.ok:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "ganpipe ui --mlflow did not serve both"
            time.sleep(0.5)
        assert f'href="http://127.0.0.1:{port + 1}/#/experiments/' in pages.text
        empty = requests.get(f"http://127.0.0.1:{port}/datasets", timeout=10)
        assert empty.status_code == 200 and "No datasets yet" in empty.text and str(not_yet) in empty.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{port + 1}/health", timeout=2)
