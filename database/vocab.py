"""Every word list and range that the schema's CHECKs also hold, written once
for Python. They live beside the storage that enforces them so that both layers
read them (database/ imports nothing from app/);
tests/operations/test_vocabulary.py holds each one to its CHECK."""

LOCAL_PROVIDER = "local"
# The built-in providers; an operator configures more (app/providers/registry.py).
PROVIDERS = (LOCAL_PROVIDER, "openai", "anthropic")
# Providers whose calls need an API key (the local models need none).
KEY_PROVIDERS = tuple(provider for provider in PROVIDERS if provider != LOCAL_PROVIDER)
# Any provider's name, as a model id's prefix is written.
PROVIDER_NAME_PATTERN = r"^[a-z0-9-]{1,32}$"
CAPABILITIES = ("coding", "reasoning", "long-context", "vision", "writing", "translation", "fast", "cheap")
# What a call may ask of a model beyond plain text; a model lacking one is refused it.
FEATURES = ("tools", "structured_output", "images", "caching", "reasoning")
# What a prompt may hold. Every model takes text; it takes images exactly when it
# has the "images" feature too (the schema's models_image_input_check).
INPUT_MODALITIES = ("text", "image")
# `debit`: money an admin took back out of a balance (it lowers total_balance, as a deposit raises it).
TRANSACTION_TYPES = ("deposit", "hold", "release", "debit")
# What an operator may do; each leaves an admin_actions row.
ADMIN_ACTIONS = ("grant_admin", "revoke_admin", "credit", "debit", "disable_user", "enable_user", "add_model",
                 "change_model", "disable_model", "enable_model", "schedule_price", "reconcile", "add_alias_list",
                 "change_alias_list", "drop_alias_list")
# An access key's spend limit counts over a UTC calendar day or month, or all time.
SPEND_LIMIT_PERIODS = ("day", "month", "total")
THEMES = ("system", "light", "dark")
# "<provider>/<name>", as in openai/gpt-4o-mini.
MODEL_ID_PATTERN = r"^[a-z0-9-]+/[A-Za-z0-9._:-]+$"
MODEL_ID_MAX_LENGTH = 100
# An alias is written like a model id's name part (gpt-4o, claude-opus-4): never a slash.
MODEL_ALIAS_PATTERN = r"^[A-Za-z0-9._:-]+$"
# An alias list names as many models as a call may: its model and five fallbacks.
ALIAS_LIST_MAX_MODELS = 6
# Usage rows per model and day that settles spread their counts over, so that
# parallel settles of one model rarely wait for each other's row lock.
USAGE_BUCKETS = 16
