import subprocess
import sys


def test_gan_core_imports_neither_ray_nor_mlflow():
    code = ("import sys, gan_core, gan_core.data, gan_core.theory, gan_core.models, gan_core.losses; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
