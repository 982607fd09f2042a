"""LiteLLM's proxy as a peer to measure against: installed once into a venv of
its own (git-ignored, never a dependency of the service), configured against
our OpenAI stub, one worker, no database, no network price map."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import stop_process
from tests.support import wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench" / "litellm-venv"
# Pinned: 1.82.7 and 1.82.8 were compromised releases; never float this.
REQUIREMENT = "litellm[proxy]==1.81.16"
MASTER_KEY = "sk-bench-litellm-master"
CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {stub_url}/v1
      api_key: {provider_key}
litellm_settings:
  telemetry: false
general_settings:
  master_key: {master_key}
"""


def ensure_installed():
    """The proxy's executable, installing the pinned release on first use."""
    executable = VENV / "bin" / "litellm"
    marker = VENV / "installed-requirement"
    if executable.exists() and marker.exists() and marker.read_text() == REQUIREMENT:
        return executable
    print(f"installing {REQUIREMENT} into {VENV} (once)", flush=True)
    VENV.parent.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", REQUIREMENT], check=True)
    marker.write_text(REQUIREMENT)
    return executable


class LiteLLMProxy:
    """`litellm --config` on a free loopback port, mapping `model` to the stub."""

    def __init__(self, port, stub_url, model, provider_key):
        executable = ensure_installed()
        self.folder = tempfile.TemporaryDirectory(prefix="qmarket-bench-litellm-")
        config = Path(self.folder.name) / "config.yaml"
        config.write_text(CONFIG.format(model=model, stub_url=stub_url, provider_key=provider_key,
                                        master_key=MASTER_KEY))
        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "OPENAI_API_KEY")}
        env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_DOCS": "True"}
        self.log = open(Path(self.folder.name) / "litellm.log", "wb")
        self.process = subprocess.Popen(
            [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
             "--num_workers", "1"],
            cwd=self.folder.name, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_ready(self.url, self.process, timeout=180, path="/health/liveliness",
                         output=Path(self.log.name).read_text)

    def stop(self):
        stop_process(self.process)
        self.log.close()
        self.folder.cleanup()
