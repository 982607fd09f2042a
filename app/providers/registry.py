"""The providers a service calls, as configuration: each a name, a wire format
(`openai` or `anthropic`; `local` is built in), a base URL, a timeout and its
house keys, named by the settings that hold them, never written here.

The built-in three read today's settings (OPENAI_BASE_URL, OPENAI_API_KEY,
ANTHROPIC_…), so an existing `.env` works unchanged. PROVIDERS_FILE, a JSON
file, adds providers (any server speaking OpenAI's format: vLLM, Ollama,
llama.cpp's server, Groq, Together, …) or replaces a built-in one by its name:

    {"providers": [{"name": "vllm", "format": "openai", "base_url": "http://10.0.0.5:8000/v1",
                    "keys": [{"env": "VLLM_API_KEY"}], "needs_key": false, "timeout": 30}]}

A key setting that is unset means no house key (logged, never fatal: a fresh
machine has none). Several keys make a pool, taken in turn by weight."""
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from database.vocab import LOCAL_PROVIDER, PROVIDER_NAME_PATTERN

log = logging.getLogger(__name__)

FORMATS = ("openai", "anthropic")
# A setting's name: what the environment or .env holds the key under.
SETTING_NAME = r"^[A-Z][A-Z0-9_]{0,63}$"


class HouseKeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    env: Annotated[str, Field(pattern=SETTING_NAME)]
    weight: Annotated[int, Field(ge=1, le=1000, strict=True)] = 1


class ProviderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=PROVIDER_NAME_PATTERN)]
    format: Literal[FORMATS]
    base_url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=500)]
    keys: Annotated[list[HouseKeyEntry], Field(max_length=64)] = []
    # Whether a call needs a key at all: a self-hosted server may take none.
    needs_key: Annotated[bool, Field(strict=True)] = True
    # Seconds before the first byte, within PROVIDER_TIMEOUT (None: PROVIDER_TIMEOUT).
    timeout: Annotated[float, Field(gt=0, le=3600)] | None = None

    @model_validator(mode="after")
    def _not_local(self):
        if self.name == LOCAL_PROVIDER:
            raise ValueError(f"{LOCAL_PROVIDER} is the built-in offline provider and cannot be replaced")
        return self


class ProvidersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: Annotated[list[ProviderEntry], Field(max_length=256)]

    @model_validator(mode="after")
    def _unique(self):
        seen = set()
        for index, entry in enumerate(self.providers):
            if entry.name in seen:
                raise ValueError(f"providers.{index}.name: {entry.name} is the name of another provider")
            seen.add(entry.name)
        return self


@dataclass(frozen=True)
class Provider:
    """A configured provider: `keys` are its house keys' (setting, value,
    weight), those whose setting is set; `unset_keys` the names of its key
    settings that are empty."""
    name: str
    format: str
    base_url: str | None = None
    keys: tuple = field(default=(), repr=False)
    needs_key: bool = True
    timeout: float | None = None
    unset_keys: tuple = ()

    @property
    def remote(self):
        return self.format != LOCAL_PROVIDER


class ProvidersError(ValueError):
    """The providers file is unusable; the message names the entry and why."""


def configured_providers(config, setting):
    """{name: Provider}: the built-in ones from `config`, then PROVIDERS_FILE's
    entries over them; `setting(name)` is a setting's value (or "") where a
    key is looked up. Raises ProvidersError naming what is wrong."""
    entries = [ProviderEntry(name="openai", format="openai", base_url=config["OPENAI_BASE_URL"],
                             keys=[HouseKeyEntry(env="OPENAI_API_KEY")]),
               ProviderEntry(name="anthropic", format="anthropic", base_url=config["ANTHROPIC_BASE_URL"],
                             keys=[HouseKeyEntry(env="ANTHROPIC_API_KEY")])]
    if config["PROVIDERS_FILE"]:
        replaced = _read(config["PROVIDERS_FILE"])
        entries = [entry for entry in entries if entry.name not in {e.name for e in replaced}] + replaced
    providers = {LOCAL_PROVIDER: Provider(LOCAL_PROVIDER, LOCAL_PROVIDER, needs_key=False)}
    for entry in entries:
        keys = tuple((key.env, setting(key.env), key.weight) for key in entry.keys)
        for name, value, _ in keys:
            if not value:
                log.info("provider %s: %s is not set, so that key is not in its house keys", entry.name, name)
        providers[entry.name] = Provider(entry.name, entry.format, entry.base_url.rstrip("/"),
                                         tuple(key for key in keys if key[1]), entry.needs_key, entry.timeout,
                                         tuple(name for name, value, _ in keys if not value))
    return providers


def _read(path):
    try:
        return ProvidersFile.model_validate_json(Path(path).read_text()).providers
    except OSError as exc:
        raise ProvidersError(f"PROVIDERS_FILE {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        problems = [f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}"
                    for error in exc.errors(include_url=False, include_input=False)]
        raise ProvidersError(f"PROVIDERS_FILE {path} refused: " + "; ".join(problems)) from None


class KeyPool:
    """A provider's house keys taken in turn, each as often as its weight,
    spread out rather than in runs (smooth weighted round-robin, per process).
    A key answered 429 sits out its Retry-After (`cool_down`); one refused
    (401, 403) leaves the pool until the service restarts (`disable`), logged
    by its setting's name, never its value."""

    def __init__(self, keys):
        self._order = _smooth_order(keys)
        self._names = {value: name for name, value, _ in keys}
        self._position, self._cooling, self._disabled = 0, {}, set()
        self._lock = threading.Lock()

    def __bool__(self):
        return bool(self._order)

    def next(self):
        """The next key in turn that is neither cooling down nor disabled;
        when all that are left cool down, the one back soonest; None when
        none is left."""
        with self._lock:
            now = time.monotonic()
            for step in range(len(self._order)):
                place = (self._position + step) % len(self._order)
                key = self._order[place]
                if key not in self._disabled and self._cooling.get(key, 0) <= now:
                    self._position = place + 1
                    return key
            left = [key for key in self._names if key not in self._disabled]
            return min(left, key=lambda key: self._cooling.get(key, 0)) if left else None

    def available(self):
        """Whether any key is left in the pool (cooling down or not)."""
        with self._lock:
            return any(key not in self._disabled for key in self._names)

    def setting_of(self, key):
        """The name of the setting that holds `key`."""
        return self._names[key]

    def cool_down(self, key, seconds):
        with self._lock:
            self._cooling[key] = max(self._cooling.get(key, 0), time.monotonic() + seconds)

    def states(self):
        """[(setting, state)] of the pool's keys, by setting name, never the
        value: `ready`, `cooling` (answered 429, sitting out its Retry-After)
        or `refused` (answered 401/403), as this process has seen them."""
        with self._lock:
            now = time.monotonic()
            return [(name, "refused" if key in self._disabled else
                     "cooling" if self._cooling.get(key, 0) > now else "ready")
                    for key, name in self._names.items()]

    def disable(self, key):
        with self._lock:
            if key in self._names and key not in self._disabled:
                self._disabled.add(key)
                log.error("the house key in %s was refused: out of its pool until the service restarts",
                          self._names[key])


def _smooth_order(keys):
    """One round of the keys' values, each as often as its weight, interleaved
    as nginx's smooth weighted round-robin orders them."""
    weights = [weight for _, _, weight in keys]
    current, order = [0] * len(keys), []
    for _ in range(sum(weights)):
        current = [now + weight for now, weight in zip(current, weights)]
        chosen = current.index(max(current))
        current[chosen] -= sum(weights)
        order.append(keys[chosen][1])
    return order
