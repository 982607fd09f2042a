"""Where a profiled request's time goes, by layer.

Every function's own time (cProfile's tottime) is given to one layer, chosen by
its file (and for a few of the service's functions, by name). Time spent in C
builtins and in the standard library belongs to whoever called them, shared out
by what each caller spent there: a socket read under httpx is the provider
call, a `cursor.execute` under the pool is the SQL round trip."""
import pstats

# (layer, part of the file path, function names or None for all), first match wins.
RULES = [
    ("SQL round trips (psycopg2 waiting on PostgreSQL)", "psycopg2", None),
    ("the pool and the cursor (database/pool.py)", "database/pool.py", None),
    ("SQL: the service's statements (database/*)", "/database/", None),
    ("provider call (httpx, incl. the stub's answer)", "/httpx/", None),
    ("provider call (httpx, incl. the stub's answer)", "/httpcore/", None),
    ("provider call (httpx, incl. the stub's answer)", "/h11/", None),
    ("provider call (httpx, incl. the stub's answer)", "app/providers/", None),
    ("flask-limiter", "/flask_limiter/", None),
    ("flask-limiter", "/limits/", None),
    ("flask-cors", "/flask_cors/", None),
    ("JWT / access-key lookup", "/jwt/", None),
    ("JWT / access-key lookup", "app/security.py", None),
    ("unknown-query guard", "app/api/guards.py", {"refuse_unknown_query_parameters"}),
    ("JWT / access-key lookup", "app/api/callers.py", None),
    ("JSON logging", "app/observability.py", None),
    ("JSON logging", "/logging/", None),
    ("pydantic validation and serialisation", "/pydantic", None),
    ("pydantic validation and serialisation", "app/api/bodies.py", None),
    ("pydantic validation and serialisation", "app/schemas/", None),
    ("billing and the /v1 view (app/billing.py, app/api/*)", "/app/", None),
    ("Flask routing, hooks, request/response", "/flask/", None),
    ("werkzeug (request parsing, test client)", "/werkzeug/", None),
]
PASS_THROUGH = ("~", "/lib/python3")  # builtins and the standard library
OTHER = "other"


def _own_layer(function):
    filename, _, name = function
    if filename == "~":
        return "SQL round trips (psycopg2 waiting on PostgreSQL)" if _is_round_trip(name) else None
    for layer, path, names in RULES:
        if path in filename and (names is None or name in names):
            return layer
    if "site-packages" not in filename and any(part in filename for part in PASS_THROUGH):
        return None
    return OTHER


def by_layer(profiler):
    """{layer: seconds} over everything the profiler saw."""
    stats = pstats.Stats(profiler).stats
    shares_memo = {}

    def shares(function, seen):
        """{layer: fraction} that `function`'s own time goes to."""
        if function in shares_memo:
            return shares_memo[function]
        layer = _own_layer(function)
        if layer is not None:
            result = {layer: 1.0}
        else:
            callers = stats[function][4]
            weights = {caller: edge[3] for caller, edge in callers.items() if caller in stats and caller not in seen}
            total = sum(weights.values())
            result = {}
            if not total:
                result = {OTHER: 1.0}
            for caller, weight in weights.items():
                for caller_layer, fraction in shares(caller, seen | {function}).items():
                    result[caller_layer] = result.get(caller_layer, 0.0) + fraction * weight / total
        shares_memo[function] = result
        return result

    layers = {}
    for function, (_, _, own_time, _, _) in stats.items():
        for layer, fraction in shares(function, frozenset()).items():
            layers[layer] = layers.get(layer, 0.0) + own_time * fraction
    return layers


def _is_round_trip(name):
    """psycopg2's execute (the service's cursors are psycopg2's RealDictCursor) or commit."""
    return ("psycopg2" in name or "Cursor." in name) and ("execute" in name or "commit" in name)


def round_trips(profiler):
    """{psycopg2 function: calls} of those that each make a round trip."""
    return {name: calls for (filename, _, name), (calls, *_rest) in pstats.Stats(profiler).stats.items()
            if filename == "~" and _is_round_trip(name)}
