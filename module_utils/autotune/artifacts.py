"""Where a fleet's trial files outlive their host: Optuna's artifact store, in a shared folder or an S3 bucket.

``autotune_artifact_store`` is either a folder (the same path on every host and the controller: NFS, CephFS) or
``s3://BUCKET[/PREFIX]`` (Optuna's ``Boto3ArtifactStore``, any S3-compatible server through ``endpoint_url``).
Credentials come from the ``s3`` option (the vault, ``no_log``) or, left unset, from boto3's own chain on the host
(``AWS_ACCESS_KEY_ID``..., ``~/.aws``, an instance role); they never reach a trial's process (its environment is
allow-listed, runners/local.py) nor any line this module writes. docs/fleet.md.
"""
import os
import re
from urllib.parse import urlsplit

import optuna

from ansible.module_utils.autotune.errors import AutotuneError

S3_SCHEME = "s3://"
S3_OPTIONS = ("endpoint_url", "region", "access_key", "secret_key", "session_token")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rules, in short
_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]{1,512}")      # S3's "safe characters" for object keys

try:  # optional: only an s3:// store needs boto3 (requirements.txt, requirements-worker.txt)
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
    STORE_ERRORS = (OSError, BotoCoreError, ClientError)
except ImportError:  # pragma: no cover - depends on the host
    boto3 = None
    STORE_ERRORS = (OSError,)


def is_s3(location):
    return str(location or "").startswith(S3_SCHEME)


def split_s3(location):
    """(bucket, prefix) of s3://BUCKET[/PREFIX]; a one-line error for anything else (credentials in it included)."""
    parts = urlsplit(location)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if "@" in bucket or parts.query or parts.fragment or not _BUCKET.fullmatch(bucket):
        raise AutotuneError("artifact store: an s3:// location is invalid; expected s3://BUCKET or s3://BUCKET/PREFIX "
                            "(a bucket name of 3-63 lower-case letters, digits, dots and dashes; credentials go in "
                            "the s3 options or the environment, never in the URL)")
    if prefix and not _PREFIX.fullmatch(prefix):
        raise AutotuneError(f"artifact store: prefix {prefix[:80]!r} of s3://{bucket} is invalid; expected letters, "
                            "digits and !_.*'()/- only")
    return bucket, prefix + "/" if prefix else ""


class PrefixedStore:
    """An artifact store whose objects all live under one key prefix of a bucket (Boto3ArtifactStore has none)."""

    def __init__(self, store, prefix):
        self.store, self.prefix = store, prefix

    def open_reader(self, artifact_id):
        return self.store.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id, content_body):
        self.store.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id):
        self.store.remove(self.prefix + artifact_id)


def _client(s3):
    """A boto3 S3 client from the s3 options; unset ones fall back to boto3's own chain (environment, files, role)."""
    s3 = {k: v for k, v in (s3 or {}).items() if v}
    endpoint = s3.get("endpoint_url")
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise AutotuneError("artifact store: s3.endpoint_url is invalid; expected http(s)://HOST[:PORT] of an "
                                "S3-compatible server, without credentials in it")
    if bool(s3.get("access_key")) != bool(s3.get("secret_key")):
        raise AutotuneError("artifact store: only one of s3.access_key and s3.secret_key is given; expected both, or "
                            "neither (boto3 then reads AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or its files)")
    return boto3.client("s3", endpoint_url=endpoint, region_name=s3.get("region"),
                        aws_access_key_id=s3.get("access_key"), aws_secret_access_key=s3.get("secret_key"),
                        aws_session_token=s3.get("session_token"))


def _s3_store(location, s3):
    bucket, prefix = split_s3(location)
    if boto3 is None:
        raise AutotuneError(f"artifact store: s3://{bucket} needs boto3, which this host's Python lacks; expected the "
                            "pins of requirements.txt (controller) and requirements-worker.txt (trainer hosts)")
    client = _client(s3)
    try:  # a wrong bucket, endpoint or key fails here in one line, not after every trial
        client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
        raise AutotuneError(f"artifact store: s3://{bucket} cannot be reached ({code or 'error'}); expected an "
                            "existing bucket the given credentials may read and write (s3 options or AWS_* "
                            "environment) at the endpoint (s3.endpoint_url for an S3-compatible server)") from None
    store = optuna.artifacts.Boto3ArtifactStore(bucket, client=client)
    return PrefixedStore(store, prefix) if prefix else store


def make_store(location, s3=None):
    """The artifact store at ``location`` (a folder or s3://BUCKET[/PREFIX]), or None when none is given."""
    if not location:
        return None
    if is_s3(location):
        return _s3_store(location, s3)
    folder = os.path.abspath(os.path.expanduser(location))
    if not os.path.isdir(folder):
        raise AutotuneError(f"artifact store: {folder!r} is not a folder on this host; expected the shared folder "
                            "(the same path on every host and the controller) or s3://BUCKET[/PREFIX]")
    return optuna.artifacts.FileSystemArtifactStore(folder)
