"""The web tool's pages: Piranha's panels (RHEL 5 guide, chapter 4) as a starlette app.

Every page needs a session (``/login`` and ``/static`` aside); every POST also needs the
session's CSRF token.  Pages are rendered on the server and their forms work without
JavaScript; ``static/monitor.js`` only refreshes CONTROL/MONITORING and draws its charts.
Handlers that talk to sockets or hash passwords run in starlette's thread pool.

The edit panels change the session's draft (pylvs.web.store); APPLY writes lvs.cf and
reloads the running router; CONTROL/MONITORING reads the director and pulse through their
web control sockets (pylvs.web.client).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import quote as urlquote

from itsdangerous import BadSignature
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from pylvs import __version__
from pylvs.config.merge import line_diff
from pylvs.config.model import Config, RealServer, VirtualServer
from pylvs.web import auth, forms, view
from pylvs.web.client import Control, Unavailable
from pylvs.web.forms import NETWORK_LABELS
from pylvs.web.store import Draft, Store, StoreError, errors_of, summary

log = logging.getLogger("pylvs.web")

HERE = Path(__file__).parent
COOKIE = "pylvs_session"
LOGIN_COOKIE = "pylvs_login"  # the login form's own CSRF token, before there is a session
MAX_BODY = 64 * 1024  # bytes of a request body: the largest form is a few kB
MAX_FIELDS = 200
REFRESH_CHOICES = (2, 5, 10, 30, 60)  # seconds; Piranha's CONTROL/MONITORING refreshed every 10
REFRESH_DEFAULT = 10
MEDIA_TYPES = {".css": "text/css", ".js": "text/javascript"}
SERVER_STATES = ("drain", "maint", "ready")  # HAProxy admin mode's DRAIN, MAINT, READY
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


@dataclass
class Settings:
    """What ``pylvs web`` was started with."""

    lvs_cf: str
    passwd: str
    director: str  # the director's web control socket
    pulse: str | None = None  # pulse's, when one runs here
    allow: tuple[IPv4Network | IPv6Network, ...] = ()  # empty: every client (the listen address limits it)
    tls: bool = False
    # Host names the tool answers to besides IP literals: a page elsewhere that rebinds its
    # own name to this address (DNS rebinding) is refused.
    server_names: tuple[str, ...] = ("localhost",)


class Web:
    """The tool's state: settings, sessions, login limiter, the lvs.cf store, the sockets."""

    def __init__(self, settings: Settings, *, resolver: Any = None) -> None:
        self.settings = settings
        self.sessions = auth.Sessions()
        self.limiter = auth.LoginLimiter()
        self.store = Store(settings.lvs_cf, resolver)
        self.control = Control(settings.director, settings.pulse)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(version=__version__, network_labels=NETWORK_LABELS,
                                          editable_name=forms.editable_name)

    # -- sessions and drafts -------------------------------------------------------------
    def session(self, request: Request) -> auth.Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def draft(self, s: auth.Session) -> Draft:
        """The session's pending lvs.cf, begun from the file on first use."""
        if s.draft is None:
            s.draft = self.store.begin()
        return s.draft

    def render(self, request: Request, s: auth.Session | None, template: str, status: int = 200,
               **ctx: Any) -> Response:  # fmt: skip
        pending = None
        if s is not None and s.draft is not None and s.draft.edits:
            pending = {"edits": len(s.draft.edits), **summary(self.store.check(s.draft.text))}
        flash, s.flash = (s.flash, []) if s is not None else ([], [])
        ctx.update(request=request, session=s, csrf=s.csrf if s else "", pending=pending, flash=flash,
                   lvs_cf=self.settings.lvs_cf)  # fmt: skip
        return self.templates.TemplateResponse(request, template, ctx, status_code=status)


class BodyTooLarge(Exception):
    """A request body past MAX_BODY (raised by Guard's receive)."""


def _flash(s: auth.Session, text: str, kind: str = "ok") -> None:
    s.flash.append({"kind": kind, "text": text})


async def _read_form(request: Request) -> FormData:
    try:
        return await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=MAX_BODY)
    except BodyTooLarge:  # Guard's receive: a body without a length that grew past the limit
        raise HTTPException(413, f"request larger than {MAX_BODY} bytes") from None


Handler = Callable[..., Response]


def page(web: Web, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A GET page: a session or the login page."""

    async def endpoint(request: Request) -> Response:
        s = web.session(request)
        if s is None:
            if request.url.path.endswith((".json", ".csv")) or request.url.path.startswith("/monitor/live"):
                return PlainTextResponse("not logged in", status_code=401)
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={urlquote(here)}", status_code=303)
        return await run_in_threadpool(fn, request, s)

    return endpoint


def action(web: Web, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A POST: a session and its CSRF token, or 403 (nothing is done)."""

    async def endpoint(request: Request) -> Response:
        s = web.session(request)
        if s is None:
            return PlainTextResponse("refused: not logged in", status_code=403)
        form = await _read_form(request)
        if not auth.csrf_ok(s, form.get("csrf")):
            log.warning("refused a POST to %s without a valid CSRF token from %s", request.url.path,
                        request.client.host if request.client else "?")  # fmt: skip
            return PlainTextResponse("refused: the form's CSRF token is missing or wrong (reload the page)",
                                     status_code=403)  # fmt: skip
        return await run_in_threadpool(_one_at_a_time, fn, request, s, {k: str(v) for k, v in form.items()})

    return endpoint


def _one_at_a_time(fn: Handler, request: Request, s: auth.Session, form: dict) -> Response:
    """A session's changes one after the other: two tabs never interleave on its draft."""
    with s.lock:
        return fn(request, s, form)


def _redirect(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no //host, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/monitor"
    return target


# -- the panels' edits ----------------------------------------------------------------------
class EditError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Edit:
    """What a panel's ACCEPT asks of the draft."""

    config: Config
    what: str  # for the list of pending edits
    scope: tuple[str, ...] | None = None
    fields: tuple[forms.Field, ...] = ()
    renames: dict[tuple[str, ...], str] | None = None
    then: str = ""  # where to go once accepted


def _find_virtual(config: Config, name: str) -> VirtualServer:
    v = next((v for v in config.virtuals if v.name == name), None)
    if v is None:
        raise LookupError(f"no virtual server named {name!r} in your lvs.cf draft")
    return v


def _find_server(v: VirtualServer, name: str) -> RealServer:
    s = next((s for s in v.servers if s.name == name), None)
    if s is None:
        raise LookupError(f"virtual server {v.name!r} has no real server named {name!r}")
    return s


def _with_virtual(config: Config, name: str, new: VirtualServer | None) -> Config:
    """``config`` with virtual ``name`` replaced by ``new`` (removed when None)."""
    vs = [new if v.name == name else v for v in config.virtuals]
    return dataclasses.replace(config, virtuals=tuple(v for v in vs if v is not None))


def _with_server(v: VirtualServer, name: str, new: RealServer | None) -> VirtualServer:
    ss = [new if s.name == name else s for s in v.servers]
    return dataclasses.replace(v, servers=tuple(s for s in ss if s is not None))


def _sync_note(config: Config) -> str | None:
    """What becomes of the backup's copy: Piranha left it to scp; pylvs's config sync
    (config_sync = 1) has the backup fetch the file by itself."""
    if not config.backup_active:
        return None
    if not config.config_sync:
        return (f"The backup router ({config.backup}) keeps its own lvs.cf: copy this one to it, or set "
                "config_sync = 1 (REDUNDANCY) to have it fetched.")  # fmt: skip
    return (f"Config sync: the backup router ({config.backup}) fetches serial_no {config.serial_no} within "
            f"{config.config_sync_interval:g} s; CONTROL/MONITORING shows when it has.")


def build_app(web: Web) -> Starlette:  # noqa: C901 - one function per panel, closed over web
    T = web.templates  # noqa: N806

    def try_edit(request: Request, s: auth.Session, form: dict, fields: tuple[forms.Field, ...],
                 make: Callable[[Config, dict], Edit], template: str, **ctx: Any) -> Response:  # fmt: skip
        """Read the form, make the edit, check it on the draft; accept or show why not."""
        draft = web.draft(s)
        config = web.store.config_of(draft)
        values, errors = forms.read_form(fields, form)
        general: list[str] = []
        edit = None
        if not errors:
            try:
                edit = make(config, values)
            except EditError as exc:
                errors[exc.field] = str(exc)
        if edit is not None:
            try:
                proposal = web.store.propose(draft, edit.config, renames=edit.renames, scope=edit.scope,
                                             fields={f.attr: f.name for f in edit.fields})  # fmt: skip
            except StoreError as exc:
                general.append(str(exc))
            else:
                errors.update(proposal.field_errors)
                general += [str(d) for d in proposal.new_errors]
                if proposal.ok:
                    web.store.accept(draft, proposal, edit.what)
                    _flash(s, f"Accepted: {edit.what}. It is in your pending changes; APPLY writes lvs.cf.")
                    return _redirect(edit.then or request.url.path)
        shown = {f.name: forms.echo(f, form) for f in fields}
        return web.render(request, s, template, status=400, fields=fields, values=shown, errors=errors,
                          general=general, **ctx)  # fmt: skip

    def form_page(request: Request, s: auth.Session, fields, obj, template: str, **ctx: Any) -> Response:
        """A panel's form showing ``obj`` (a new block: the model's defaults, as lvs.cf has them)."""
        shown = {f.name: forms.show(f, obj) for f in fields}
        return web.render(request, s, template, fields=fields, values=shown, errors={}, general=[], **ctx)

    def with_draft(fn: Handler) -> Handler:
        """A panel needs a draft: a file that does not parse is shown, not edited."""

        def wrapped(request: Request, s: auth.Session, *args: Any) -> Response:
            try:
                web.draft(s)
                return fn(request, s, *args)
            except StoreError as exc:
                return web.render(request, s, "problem.html", status=409, title="lvs.cf cannot be edited",
                                  message=str(exc))  # fmt: skip
            except LookupError as exc:
                return web.render(request, s, "problem.html", status=404, title="Not found", message=exc.args[0])

        return wrapped

    # -- login, logout, password --------------------------------------------------------
    async def login_get(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        resp = T.TemplateResponse(request, "login.html", {"token": token, "next": _safe_next(
            request.query_params.get("next")), "error": None, "session": None, "pending": None, "flash": []})
        resp.set_cookie(LOGIN_COOKIE, web.sessions.signer.sign(token).decode(), httponly=True, samesite="strict",
                        secure=web.settings.tls, path="/login")  # fmt: skip
        return resp

    async def login_post(request: Request) -> Response:
        form = await _read_form(request)
        addr = request.client.host if request.client else "?"
        nxt = _safe_next(str(form.get("next", "")))

        def again(error: str, status: int, **headers: str) -> Response:
            token = secrets.token_urlsafe(24)
            resp = T.TemplateResponse(request, "login.html", {"token": token, "next": nxt, "error": error,
                                                              "session": None, "pending": None, "flash": []},
                                      status_code=status, headers=headers or None)  # fmt: skip
            resp.set_cookie(LOGIN_COOKIE, web.sessions.signer.sign(token).decode(), httponly=True,
                            samesite="strict", secure=web.settings.tls, path="/login")  # fmt: skip
            return resp

        try:
            expected = web.sessions.signer.unsign(request.cookies.get(LOGIN_COOKIE, ""), max_age=3600).decode()
        except BadSignature:
            expected = None
        if expected is None or not auth.same_token(expected, str(form.get("token", ""))):
            return again("The login form expired; please try again.", 403)
        wait = web.limiter.attempt(addr)  # the slot is taken before the hash: no burst gets past it
        if wait > 0:
            log.warning("login refused from %s: too many failed attempts", addr)
            return again(f"Too many failed logins: wait {int(wait) + 1} s.", 429, **{"retry-after": str(int(wait) + 1)})
        user = str(form.get("username", "")).strip() or auth.DEFAULT_LOGIN
        password = str(form.get("password", ""))
        try:
            ok = len(password) <= auth.MAX_PASSWORD and await run_in_threadpool(
                auth.verify, web.settings.passwd, user, password)
        except auth.Busy:
            return again("Too many logins at once; try again in a few seconds.", 503, **{"retry-after": "5"})
        except auth.PasswordError as exc:
            log.error("cannot check a login: %s", exc)
            return again(f"The password file cannot be read ({exc}); see the tool's log.", 500)
        if not ok:
            log.warning("failed login for %r from %s", user[:64], addr)
            return again("Wrong user name or password.", 401)
        web.limiter.succeeded(addr)
        cookie, _ = web.sessions.create(user)
        log.info("%s logged in from %s", user, addr)
        resp = _redirect(nxt)
        resp.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", secure=web.settings.tls, path="/")
        resp.delete_cookie(LOGIN_COOKIE, path="/login")
        return resp

    def logout(request: Request, s: auth.Session, form: dict) -> Response:
        web.sessions.end(request.cookies.get(COOKIE))
        resp = _redirect("/login")
        resp.delete_cookie(COOKIE, path="/")
        return resp

    def password_get(request: Request, s: auth.Session) -> Response:
        return web.render(request, s, "password.html", error=None)

    def password_post(request: Request, s: auth.Session, form: dict) -> Response:
        old, new, again = form.get("current", ""), form.get("new", ""), form.get("again", "")
        addr = request.client.host if request.client else "?"
        wait = web.limiter.attempt(addr)  # the current password is a guess like a login's
        if wait > 0:
            return web.render(request, s, "password.html", status=429, error=f"Too many failed tries: wait "
                                                                               f"{int(wait) + 1} s.")  # fmt: skip
        try:
            if not auth.verify(web.settings.passwd, s.user, old):
                return web.render(request, s, "password.html", status=400, error="The current password is wrong.")
            web.limiter.succeeded(addr)
            if new != again:
                return web.render(request, s, "password.html", status=400, error="The two new passwords differ.")
            auth.write_password(web.settings.passwd, new, s.user)
        except auth.Busy:
            return web.render(request, s, "password.html", status=503, error="Busy: try again in a few seconds.")
        except (auth.PasswordError, OSError) as exc:
            return web.render(request, s, "password.html", status=400, error=f"Not changed: {exc}")
        web.sessions.end_all(s.user, keep=s)
        log.info("password of %s changed from the web tool", s.user)
        _flash(s, "Password changed; every other session of this user has ended.")
        return _redirect("/monitor")

    # -- CONTROL/MONITORING ---------------------------------------------------------------
    def _state() -> dict[str, Any]:
        out: dict[str, Any] = {"time": time.time(), "director": None, "director_error": None, "pulse": None}
        try:
            out["director"] = web.control.director_status()
        except Unavailable as exc:
            out["director_error"] = str(exc)
        try:
            out["pulse"] = web.control.pulse_status()
        except Unavailable as exc:
            out["pulse_error"] = str(exc)
        out["services"] = view.monitor(out["director"], out["time"])
        return out

    def _refresh(request: Request) -> int:
        try:
            n = int(request.query_params.get("refresh", REFRESH_DEFAULT))
        except ValueError:
            return REFRESH_DEFAULT
        return n if n in REFRESH_CHOICES or n == 0 else REFRESH_DEFAULT

    def monitor(request: Request, s: auth.Session) -> Response:
        return web.render(request, s, "monitor.html", state=_state(), refresh=_refresh(request),
                          refresh_choices=REFRESH_CHOICES)  # fmt: skip

    def monitor_live(request: Request, s: auth.Session) -> Response:
        st = _state()
        html = T.get_template("_table.html").render(state=st, csrf=s.csrf, refresh=_refresh(request))
        head = T.get_template("_router.html").render(state=st)
        points = [{"key": f"{svc['name']}/{r['server'] or r['address']}", "virtual": svc["name"],
                   "server": r["server"] or r["address"], "cps": r["cps"], "active": r["active"],
                   "inpps": r["inpps"], "outpps": r["outpps"], "inbps": r["inbps"], "outbps": r["outbps"]}
                  for svc in st["services"] for r in svc["rows"]]  # fmt: skip
        return JSONResponse({"time": st["time"], "table": html, "router": head, "points": points})

    def status_json(request: Request, s: auth.Session) -> Response:
        st = _state()
        return Response(json.dumps({"version": 1, "time": st["time"], "director": st["director"],
                                    "director_error": st["director_error"], "pulse": st["pulse"],
                                    "servers": st["services"]}, indent=1, default=str),
                        media_type="application/json",
                        headers={"content-disposition": 'attachment; filename="pylvs-status.json"'})  # fmt: skip

    def status_csv(request: Request, s: auth.Session) -> Response:
        return Response(view.csv_text(_state()["services"]), media_type="text/csv",
                        headers={"content-disposition": 'attachment; filename="pylvs-status.csv"'})  # fmt: skip

    def server_state(request: Request, s: auth.Session, form: dict) -> Response:
        state = form.get("state", "")
        back = _safe_next(form.get("back") or "/monitor")
        if state not in SERVER_STATES:
            _flash(s, f"unknown state {state!r}", "error")
            return _redirect(back)
        try:
            reply = web.control.server_state(form.get("virtual", ""), form.get("server", ""), state)
        except Unavailable as exc:
            _flash(s, f"Not done: {exc}", "error")
            return _redirect(back)
        if reply.get("ok"):
            log.info("%s set %s/%s to %s", s.user, form.get("virtual"), form.get("server"), state)
            _flash(s, f"{form.get('virtual')} / {form.get('server')}: {state.upper()}")
        else:
            _flash(s, f"Not done: {reply.get('error')}", "error")
        return _redirect(back)

    # -- GLOBAL SETTINGS and REDUNDANCY ------------------------------------------------------
    def global_panel(fields: tuple[forms.Field, ...], template: str, title: str, what: str):
        def get(request: Request, s: auth.Session) -> Response:
            return form_page(request, s, fields, web.store.config_of(web.draft(s)), template, title=title)

        def post(request: Request, s: auth.Session, form: dict) -> Response:
            def make(config: Config, values: dict) -> Edit:
                return Edit(dataclasses.replace(config, **values), what, (), fields)

            return try_edit(request, s, form, fields, make, template, title=title)

        return get, post

    global_get, global_post = global_panel(forms.GLOBAL, "global.html", "GLOBAL SETTINGS", "global settings")
    red_get, red_post = global_panel(forms.REDUNDANCY, "redundancy.html", "REDUNDANCY", "redundancy")

    # -- VIRTUAL SERVERS -------------------------------------------------------------------
    def virtuals(request: Request, s: auth.Session) -> Response:
        config = web.store.config_of(web.draft(s))
        return web.render(request, s, "virtuals.html", config=config)

    def virtual_get(request: Request, s: auth.Session) -> Response:
        name = request.path_params.get("name")
        config = web.store.config_of(web.draft(s))
        v = _find_virtual(config, name) if name else VirtualServer("")
        return form_page(request, s, forms.VIRTUAL, v, "virtual.html", vname=name)

    def virtual_post(request: Request, s: auth.Session, form: dict) -> Response:
        name = request.path_params.get("name")

        def make(config: Config, values: dict) -> Edit:
            new_name = values["name"]
            if new_name != name and any(v.name == new_name for v in config.virtuals):
                raise EditError("name", f"a virtual server named {new_name!r} exists")
            if name is None:  # ADD: a new, inactive block (ACTIVATE in the list turns it on)
                v = VirtualServer(**values)
                return Edit(dataclasses.replace(config, virtuals=(*config.virtuals, v)), f"virtual {new_name} added",
                            (new_name,), forms.VIRTUAL, then=f"/virtual/{urlquote(new_name)}")  # fmt: skip
            v = dataclasses.replace(_find_virtual(config, name), **values)
            renames = {(name,): new_name} if new_name != name else None
            return Edit(_with_virtual(config, name, v), f"virtual {new_name} edited", (new_name,), forms.VIRTUAL,
                        renames, then=f"/virtual/{urlquote(new_name)}")  # fmt: skip

        return try_edit(request, s, form, forms.VIRTUAL, make, "virtual.html", vname=name)

    def list_change(request: Request, s: auth.Session, change: Callable[[Config], tuple[Config, str]],
                    back: str) -> Response:  # fmt: skip
        """A list button (delete, (de)activate): into the draft if it brings no error."""
        draft = web.draft(s)
        new, what = change(web.store.config_of(draft))
        try:
            proposal = web.store.propose(draft, new)
        except StoreError as exc:
            _flash(s, f"Not done: {exc}", "error")
            return _redirect(back)
        if proposal.new_errors:
            _flash(s, f"Not done ({what}): " + "; ".join(str(d) for d in proposal.new_errors), "error")
        else:
            web.store.accept(draft, proposal, what)
            _flash(s, f"Accepted: {what}. APPLY writes lvs.cf.")
        return _redirect(back)

    def virtual_toggle(request: Request, s: auth.Session, form: dict) -> Response:
        name = request.path_params["name"]

        def change(config: Config) -> tuple[Config, str]:
            v = _find_virtual(config, name)
            what = f"virtual {name} {'deactivated' if v.active else 'activated'}"
            return _with_virtual(config, name, dataclasses.replace(v, active=not v.active)), what

        return list_change(request, s, change, "/virtual")

    def virtual_delete(request: Request, s: auth.Session, form: dict) -> Response:
        name = request.path_params["name"]

        def change(config: Config) -> tuple[Config, str]:
            _find_virtual(config, name)
            return _with_virtual(config, name, None), f"virtual {name} deleted"

        return list_change(request, s, change, "/virtual")

    # -- REAL SERVER -------------------------------------------------------------------------
    def reals(request: Request, s: auth.Session) -> Response:
        v = _find_virtual(web.store.config_of(web.draft(s)), request.path_params["name"])
        return web.render(request, s, "reals.html", v=v, vname=v.name)

    def real_get(request: Request, s: auth.Session) -> Response:
        v = _find_virtual(web.store.config_of(web.draft(s)), request.path_params["name"])
        sname = request.path_params.get("server")
        server = _find_server(v, sname) if sname else RealServer("")
        return form_page(request, s, forms.REAL, server, "real.html", vname=v.name, sname=sname)

    def real_post(request: Request, s: auth.Session, form: dict) -> Response:
        vname, sname = request.path_params["name"], request.path_params.get("server")

        def make(config: Config, values: dict) -> Edit:
            v = _find_virtual(config, vname)
            new_name = values["name"]
            if new_name != sname and any(x.name == new_name for x in v.servers):
                raise EditError("name", f"virtual server {vname!r} has a real server named {new_name!r}")
            back = f"/virtual/{urlquote(vname)}/real"
            if sname is None:  # ADD: inactive until ACTIVATE, as in Piranha
                nv = dataclasses.replace(v, servers=(*v.servers, RealServer(**values)))
                return Edit(_with_virtual(config, vname, nv), f"real server {new_name} added to {vname}",
                            (vname, new_name), forms.REAL, then=back)  # fmt: skip
            nv = _with_server(v, sname, dataclasses.replace(_find_server(v, sname), **values))
            renames = {(vname, sname): new_name} if new_name != sname else None
            return Edit(_with_virtual(config, vname, nv), f"real server {new_name} of {vname} edited",
                        (vname, new_name), forms.REAL, renames, then=back)  # fmt: skip

        return try_edit(request, s, form, forms.REAL, make, "real.html", vname=vname, sname=sname)

    def real_toggle(request: Request, s: auth.Session, form: dict) -> Response:
        vname, sname = request.path_params["name"], request.path_params["server"]

        def change(config: Config) -> tuple[Config, str]:
            v = _find_virtual(config, vname)
            server = _find_server(v, sname)
            what = f"real server {sname} of {vname} {'deactivated' if server.active else 'activated'}"
            nv = _with_server(v, sname, dataclasses.replace(server, active=not server.active))
            return _with_virtual(config, vname, nv), what

        return list_change(request, s, change, f"/virtual/{urlquote(vname)}/real")

    def real_delete(request: Request, s: auth.Session, form: dict) -> Response:
        vname, sname = request.path_params["name"], request.path_params["server"]

        def change(config: Config) -> tuple[Config, str]:
            v = _find_virtual(config, vname)
            _find_server(v, sname)
            return _with_virtual(config, vname, _with_server(v, sname, None)), f"real server {sname} of {vname} deleted"

        return list_change(request, s, change, f"/virtual/{urlquote(vname)}/real")

    # -- MONITORING SCRIPTS ------------------------------------------------------------------
    def scripts_get(request: Request, s: auth.Session) -> Response:
        v = _find_virtual(web.store.config_of(web.draft(s)), request.path_params["name"])
        return form_page(request, s, forms.MONITOR, v, "scripts.html", vname=v.name)

    def scripts_post(request: Request, s: auth.Session, form: dict) -> Response:
        vname = request.path_params["name"]

        def make(config: Config, values: dict) -> Edit:
            v = dataclasses.replace(_find_virtual(config, vname), **values)
            return Edit(_with_virtual(config, vname, v), f"monitoring script of {vname}", (vname,), forms.MONITOR)

        return try_edit(request, s, form, forms.MONITOR, make, "scripts.html", vname=vname)

    # -- APPLY ---------------------------------------------------------------------------------
    def apply_get(request: Request, s: auth.Session) -> Response:
        draft = web.draft(s)
        stale = web.store.stale(draft) if draft.changed else None
        final = web.store.final_text(draft) if draft.changed else draft.text
        diags = web.store.check(final)
        errors = errors_of(diags)
        return web.render(request, s, "apply.html", draft=draft, stale=stale,
                          diff=line_diff(draft.base_text, final, Path(web.settings.lvs_cf).name),
                          errors=[str(d) for d in errors],
                          others=[str(d) for d in diags if d not in errors])  # fmt: skip

    def apply_post(request: Request, s: auth.Session, form: dict) -> Response:
        draft = web.draft(s)
        if form.get("version") != str(draft.version):
            _flash(s, "Your pending changes changed since that page was shown (another tab?): review them again.",
                   "error")  # fmt: skip
            return _redirect("/apply")
        if not draft.changed:
            _flash(s, "Nothing to apply.", "error")
            return _redirect("/apply")
        try:
            applied = web.store.apply(draft)
        except StoreError as exc:
            log.warning("%s: apply refused: %s", s.user, exc)
            return web.render(request, s, "applied.html", status=409, applied=None, error=str(exc), reload=None)
        log.info("%s applied lvs.cf serial_no %d (%s)", s.user, applied.serial_no, "; ".join(draft.edits))
        s.draft = None  # the next edit begins from the file just written
        try:
            reload = web.control.reload()
        except Unavailable as exc:
            reload = None
            error = f"lvs.cf written, but no running director answered ({exc}): it reads the file when it starts"
        else:
            error = None
        return web.render(request, s, "applied.html", applied=applied, error=error, reload=reload,
                          sync=_sync_note(web.store.on_disk()))

    def discard(request: Request, s: auth.Session, form: dict) -> Response:
        s.draft = None
        _flash(s, "Pending changes discarded; the panels show lvs.cf as it is now.")
        return _redirect(_safe_next(form.get("back") or "/monitor"))

    assets = {p.name: (p.read_bytes(), MEDIA_TYPES[p.suffix]) for p in (HERE / "static").iterdir()}

    async def static(request: Request) -> Response:
        """The stylesheet and the script, read once at start (the tool reads no file of its
        own once it has become its user)."""
        asset = assets.get(request.path_params["name"])
        if asset is None:
            return PlainTextResponse("not found", status_code=404)
        return Response(asset[0], media_type=asset[1], headers={"cache-control": "max-age=3600"})

    async def home(request: Request) -> Response:
        return _redirect("/monitor")

    P = lambda fn: page(web, fn)  # noqa: E731, N806
    A = lambda fn: action(web, fn)  # noqa: E731, N806
    D = with_draft  # noqa: N806
    routes = [
        Route("/", home),
        Route("/login", login_get, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", A(logout), methods=["POST"]),
        Route("/password", P(password_get), methods=["GET"]),
        Route("/password", A(password_post), methods=["POST"]),
        Route("/monitor", P(monitor)),
        Route("/monitor/live", P(monitor_live)),
        Route("/status.json", P(status_json)),
        Route("/status.csv", P(status_csv)),
        Route("/server/state", A(server_state), methods=["POST"]),
        Route("/global", P(D(global_get)), methods=["GET"]),
        Route("/global", A(D(global_post)), methods=["POST"]),
        Route("/redundancy", P(D(red_get)), methods=["GET"]),
        Route("/redundancy", A(D(red_post)), methods=["POST"]),
        Route("/virtual", P(D(virtuals))),
        Route("/virtual/new", P(D(virtual_get)), methods=["GET"]),
        Route("/virtual/new", A(D(virtual_post)), methods=["POST"]),
        Route("/virtual/{name}", P(D(virtual_get)), methods=["GET"]),
        Route("/virtual/{name}", A(D(virtual_post)), methods=["POST"]),
        Route("/virtual/{name}/toggle", A(D(virtual_toggle)), methods=["POST"]),
        Route("/virtual/{name}/delete", A(D(virtual_delete)), methods=["POST"]),
        Route("/virtual/{name}/real", P(D(reals))),
        Route("/virtual/{name}/real/new", P(D(real_get)), methods=["GET"]),
        Route("/virtual/{name}/real/new", A(D(real_post)), methods=["POST"]),
        Route("/virtual/{name}/real/{server}", P(D(real_get)), methods=["GET"]),
        Route("/virtual/{name}/real/{server}", A(D(real_post)), methods=["POST"]),
        Route("/virtual/{name}/real/{server}/toggle", A(D(real_toggle)), methods=["POST"]),
        Route("/virtual/{name}/real/{server}/delete", A(D(real_delete)), methods=["POST"]),
        Route("/virtual/{name}/scripts", P(D(scripts_get)), methods=["GET"]),
        Route("/virtual/{name}/scripts", A(D(scripts_post)), methods=["POST"]),
        Route("/apply", P(D(apply_get)), methods=["GET"]),
        Route("/apply", A(D(apply_post)), methods=["POST"]),
        Route("/discard", A(discard), methods=["POST"]),
        Route("/static/{name}", static),
    ]
    app = Starlette(routes=routes)
    app.state.web = web
    return Guard(app, web.settings)


class Guard:
    """Around every request: the allow-list (the guide's section 2.4 limited who may reach
    the tool with Apache's Allow from), the Host header (an IP literal or a name in
    ``server_names``: no DNS rebinding), the body size limit, the security headers."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.state = app.state

    def _allowed(self, scope: dict) -> bool:
        if not self.settings.allow:
            return True
        host = (scope.get("client") or ("",))[0]
        try:
            addr = ip_address(host)
        except ValueError:
            return False
        addr = getattr(addr, "ipv4_mapped", None) or addr  # an IPv4 client of a dual-stack socket
        return any(addr.version == net.version and addr in net for net in self.settings.allow)

    def _host_ok(self, scope: dict) -> bool:
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").strip().lower()
        name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        try:
            ip_address(name)
            return True
        except ValueError:
            return name in self.settings.server_names

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = list(message.get("headers") or []) + SECURITY_HEADERS
            await send(message)

        async def refuse(text: str, status: int) -> None:
            await PlainTextResponse(text, status)(scope, receive, send_with_headers)

        if not self._allowed(scope):
            log.warning("refused %s: not in the allow-list", (scope.get("client") or ("?",))[0])
            return await refuse("refused: this address may not use the tool", 403)
        if not self._host_ok(scope):
            return await refuse("refused: unknown Host (use the router's address, or pylvs web --server-name)", 400)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return await refuse(f"request larger than {MAX_BODY} bytes", 413)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:  # a chunked body, no length given
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            if not started:
                await refuse(f"request larger than {MAX_BODY} bytes", 413)


def networks(allow: str | None) -> tuple[IPv4Network | IPv6Network, ...]:
    """``--allow 10.0.0.0/8,192.168.1.5,fd00::/8``: ValueError naming the bad item."""
    out = []
    for item in (allow or "").split(","):
        item = item.strip()
        if item:
            try:
                out.append(ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"--allow: {item!r} is not an IP address or network") from None
    return tuple(out)
