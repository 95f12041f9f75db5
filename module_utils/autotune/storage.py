"""Where a study lives: its Optuna storage, opened with the strategy's sampler and the pruner."""
import contextlib
import functools
import os
import re
import threading
import time
import warnings

import optuna
import sqlalchemy
from sqlalchemy import exc as sa_exc

from ansible.module_utils.autotune import strategies
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.printable import escape

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)

_SECRET_QUERY = re.compile(r"((?:password|passwd|pwd|secret|token|key)=)[^&;]*", re.IGNORECASE)


def masked_storage(url):
    """A storage URL fit for reports: the password (user-info or query parameter) replaced by ***.

    By hand rather than SQLAlchemy's parser: a password holding '@' (postgresql://u:p@ss@host) is split at
    the first '@' there, which would show the rest of it; here the user-info ends at the last '@'.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        netloc, slash, tail = rest.partition("/")
        userinfo, at, host = netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:***@{host}"
        url = f"{scheme}://{netloc}{slash}{tail}"
    return _SECRET_QUERY.sub(r"\1***", url)


def redacted(text, url):
    """``text`` (an error's message) with the storage URL's password replaced by ***, wherever it appears."""
    _, _, rest = (url or "").partition("://")
    userinfo = rest.partition("/")[0].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    return masked_storage(text.replace(password, "***") if password else text)


# The storage URLs a study can live at (Optuna's RDBStorage): the SQLAlchemy dialect, any driver after '+'.
SCHEMES = ("sqlite", "postgresql", "mysql")
CONNECT_TIMEOUT = 5  # seconds for the one connection tried before anything is written


def _server(url):
    return f"{url.host or 'localhost'}:{url.port or {'postgresql': 5432, 'mysql': 3306}.get(url.get_backend_name(), '?')}"


def check_storage(url, connect=True):
    """Fail in one line, before any folder, pack or trainer exists, when the storage URL cannot work: an unknown
    scheme, or (``connect``) a database server that does not answer one connection within CONNECT_TIMEOUT.

    The line names ``storage``, the host and port and the URL with its password masked; the driver's own text
    (often several lines, repeating the URL) is cut to its first line. SQLite is not connected: its file is
    created by the run, in the run folder that does not exist yet."""
    shown = masked_storage(url)
    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.get_dialect()  # an unknown driver after '+' (mysql+nosuchdriver) is an unknown scheme too
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError):
        parsed = None
    if parsed is None or parsed.get_backend_name() not in SCHEMES:
        scheme = url.partition("://")[0] if "://" in url else url[:20]
        raise AutotuneError(f"storage: {shown!r} has the unknown scheme {scheme!r}; expected an Optuna storage URL: "
                            "sqlite:///FILE, postgresql[+DRIVER]://USER@HOST[:PORT]/DB or mysql[+DRIVER]://...")
    userinfo = url.partition("://")[2].partition("/")[0].rpartition("@")[0]
    if "@" in userinfo:  # SQLAlchemy would take the rest of the password for the host name, and show it
        raise AutotuneError(f"storage: the user name or password of {shown!r} holds an '@'; expected it "
                            "percent-encoded (%40), as in postgresql://USER:P%40SS@HOST/DB")
    if not connect or parsed.get_backend_name() == "sqlite":
        return
    try:
        engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={"connect_timeout": CONNECT_TIMEOUT})
        with engine.connect():
            pass
    except (ImportError, sa_exc.SQLAlchemyError) as exc:
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = f"its Python driver is not installed: {reason}" if isinstance(exc, ImportError) else reason
        reason = masked_storage(reason.replace(parsed.password, "***") if parsed.password else reason)
        raise AutotuneError(f"storage: cannot connect to the {parsed.get_backend_name()} server at {_server(parsed)} "
                            f"({escape(reason)[:200]}) for {shown!r}; "
                            "expected a database server that answers (tried once, "
                            f"{CONNECT_TIMEOUT} s)") from None


def default_storage(run_dir):
    return f"sqlite:///{os.path.join(os.path.abspath(run_dir), 'study.db')}"


_REUSE = {"active": False, "storages": {}}  # URL -> the storage this run made for it (reusing_storages)
_REUSE_LOCK = threading.Lock()


@contextlib.contextmanager
def reusing_storages():
    """Within one run, each storage URL makes one Optuna storage: every RDBStorage made from a URL checks the
    schema against Optuna's migrations (0.2-1 s), and a run opened its study from a URL five times before trial 0
    (issue 21). Outside the block every call makes its own, as before (a later run may find another file there)."""
    _REUSE.update(active=True, storages={})
    try:
        yield
    finally:
        _REUSE.update(active=False, storages={})


def reused(storage):
    """The storage to hand Optuna: the one this run made for a URL already, inside reusing_storages()."""
    if not isinstance(storage, str) or not _REUSE["active"]:
        return storage
    with _REUSE_LOCK:
        if storage not in _REUSE["storages"]:
            _REUSE["storages"][storage] = optuna.storages.get_storage(storage)
        return _REUSE["storages"][storage]


def stored_trials(name, storage):
    """How many trials the storage already holds for this study (0 when it has none yet)."""
    try:
        summaries = optuna.get_all_study_summaries(reused(storage), include_best_trial=False)
    except Exception:  # pylint: disable=broad-except  # reported by open_study with the full reason
        return 0
    return next((s.n_trials for s in summaries if s.study_name == name), 0)


def shared(url):
    """A storage several controllers (hosts) may share: a database server, not a file of this host."""
    return isinstance(url, str) and "://" in url and not url.startswith(("sqlite:", "file:"))


# Seconds to wait before each retry of a storage call that lost its database connection: about 30 s in all,
# enough for a PostgreSQL restart (measured: a few seconds); then the error goes up and the run stops in one line.
RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15)
_TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, optuna.exceptions.StorageInternalError)
_depth = threading.local()


def _retrying(method):
    """A storage call retried with backoff when the connection dropped (server restart, network blip).

    Only the outermost call retries (a public method calling another one does not multiply the waits). A call that
    failed that way was rolled back by the server, so doing it again does not write twice."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if getattr(_depth, "value", 0):
            return method(self, *args, **kwargs)
        _depth.value = 1
        try:
            for delay in RETRY_DELAYS + (None,):
                try:
                    return method(self, *args, **kwargs)
                except _TRANSIENT:
                    if delay is None:
                        raise
                    time.sleep(delay)
        finally:
            _depth.value = 0
    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose calls survive a database restart: pool_pre_ping replaces connections the server
    closed, and a call that still meets a dropped or refused connection is retried (RETRY_DELAYS)."""


# Every method: public ones, and the private ones Optuna itself calls from outside the class (_CachedStorage reads
# trials through _get_trials and creates them through _create_new_trial; fail_stale_trials uses _get_stale_trial_ids).
for _name in [n for n in vars(optuna.storages.RDBStorage) if not n.startswith("__")]:
    if callable(getattr(optuna.storages.RDBStorage, _name)) and not isinstance(
            vars(optuna.storages.RDBStorage)[_name], (staticmethod, classmethod)):
        setattr(RetryingRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))


def make_storage(url, workers):
    """The storage of a study. A shared database gets Optuna's heartbeats, so a trial whose controller (host)
    died is failed after the grace period and retried by another (RetryHeartbeatStaleTrialCallback), a
    connection the server dropped is replaced before use (pool_pre_ping), and a call that meets the server
    restarting is retried (RetryingRDBStorage) instead of failing the run."""
    if not shared(url):
        return url
    return RetryingRDBStorage(
        url, engine_kwargs={"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2},
        heartbeat_interval=workers["heartbeat_interval"], grace_period=workers["grace_period"],
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())


def open_study(config, plan, storage):
    """The study, created or resumed; the sampler's seed is offset by the trials stored, so a resume draws anew.
    Created in target.direction (the pruners and Optuna's best follow it); a stored study of another direction
    or metric is refused: its values would be compared the wrong way round."""
    url = storage if isinstance(storage, str) else storage.url
    target = config["target"]
    try:
        sampler = strategies.make_sampler(config, plan, stored_trials(config["study"], url))
        study = optuna.create_study(study_name=config["study"], storage=reused(storage),
                                    direction=target["direction"], load_if_exists=True, sampler=sampler,
                                    pruner=strategies.make_pruner(config, plan))
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as exc:
        raise AutotuneError(f"storage: cannot open study {config['study']!r} at {masked_storage(url)} "
                            f"({type(exc).__name__}: {masked_storage(str(exc))}); expected a reachable Optuna storage URL")
    _check_target(study, target, url)
    return study


def _check_target(study, target, url):
    """One line when the stored study was made for another direction or metric than the configuration's."""
    stored = study.direction.name.lower()
    metric = study.user_attrs.get("metric")
    if metric is None:  # the study's first opening: its metric is recorded beside the direction Optuna keeps
        metric = target["metric"]
        study.set_user_attr("metric", metric)
    if stored != target["direction"] or metric != target["metric"]:
        raise AutotuneError(f"target: study {study.study_name!r} at {masked_storage(url)} was made to {stored} "
                            f"{metric}, not to {target['direction']} {target['metric']}; expected the same "
                            "target.metric and target.direction, or another study name (study:) for the new target")
