"""The configuration templates under deploy/, shared by the local cluster and
compose.yaml: `${NAME}` placeholders filled in by name, as the nginx image's
envsubst (and deploy/pgbouncer/entrypoint.sh) fill them in a container.
nginx's own `$variables` are written without braces, so they are left alone."""
import re
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
NGINX_TEMPLATE = DEPLOY_DIR / "nginx" / "qmarket.conf.template"
PGBOUNCER_TEMPLATE = DEPLOY_DIR / "pgbouncer" / "pgbouncer.ini.template"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def placeholders(template):
    """The names a template asks for."""
    return set(PLACEHOLDER.findall(Path(template).read_text()))


def render(template, values):
    """The template's text with every placeholder filled; each must be given, and nothing more."""
    wanted, given = placeholders(template), set(values)
    if wanted != given:
        raise ValueError(f"{Path(template).name}: missing {sorted(wanted - given)}, unknown {sorted(given - wanted)}")
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), Path(template).read_text())
