"""The README's screenshots of `ganpipe ui`, taken on a real workflow's output.

    cd FOLDER_WHERE_GANPIPE_RUN_RAN && python /path/to/docs/ui/shoot.py

It starts `ganpipe ui --data datasets` there (the tracking store `mlflow.db` of that folder), opens
each page in headless Chromium (Debian's package) and writes models.png, try.png, dataset.png and
batch.png next to this script.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parent


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")}
    ui = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ui", "--data", "datasets", "--port", str(port)],
                          env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if requests.get(url + "/models", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url + "/models")
            page.screenshot(path=str(OUT / "models.png"), full_page=True)
            page.goto(url + "/try")
            page.fill("#count", "4")
            page.click("#draw")
            page.screenshot(path=str(OUT / "try.png"), full_page=True)
            page.goto(url + "/datasets")
            page.locator("#datasets a").first.click()
            page.screenshot(path=str(OUT / "dataset.png"), full_page=True)
            page.goto(url + "/batch")
            page.fill("#name", f"from-the-page-{time.strftime('%H%M%S')}")
            page.fill("#rows", "500")
            page.click("#start")
            page.wait_for_function("['finished', 'failed', 'cancelled'].includes(document.querySelector('#status').innerText)",
                                   timeout=600_000)
            page.screenshot(path=str(OUT / "batch.png"), full_page=True)
            browser.close()
    finally:
        os.killpg(ui.pid, 15)
        ui.wait()


if __name__ == "__main__":
    main()
