# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of every module that reads a tune configuration (module_utils/autotune/module_args.py).

DOCUMENTATION: the configuration file and where runs go (CONFIG_FILE_ARGUMENTS); PUSHED (extend
C(autotune_config.pushed)): what a module that may read a pushed configuration adds (CONFIG_ARGUMENTS); ARTIFACT_STORE
(extend C(autotune_config.artifact_store)): a fleet's artifact store (ARTIFACT_ARGUMENTS)."""


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  config:
    description: Path of the tune configuration (YAML); docs/configuration.md is its reference.
    type: path
    required: true
  templates_dir:
    description: Folder of model templates (C(<name>.py.j2) with C(<name>.yml) metadata).
    type: path
    required: true
  overrides:
    description: Configuration values that replace those of the file (same structure, merged deeply).
    type: dict
    default: {}
  runs_root:
    description: Parent of the run directory when the configuration sets no C(run_dir).
    type: path
    default: runs
"""

    PUSHED = r"""
options:
  pushed:
    description:
      - The configuration comes from a pushed model repository, not from the operator (docs/security.md).
      - Its C(run_dir), C(storage) and C(runner) are ignored (give them through I(overrides)), its C(model.file)
        must be in its own folder, and its C(dataset.path) in that folder or one of I(data_roots).
    type: bool
    default: false
  data_roots:
    description: Folders a pushed configuration may take its data set from (the operator's data).
    type: list
    elements: path
    default: []
  limits:
    description:
      - The operator's caps (C(autotune_limits)), applied over whatever the configuration, a push or I(overrides)
        asks; a value above its cap is lowered to it and said in one line (C(limited) of M(model_facts)).
      - Unset suboptions cap nothing.
    type: dict
    suboptions:
      max_trials:
        description: At most this many trials in the study (C(budget.max_trials)).
        type: int
      max_seconds:
        description: At most this many seconds of tuning (C(budget.max_seconds)).
        type: int
      trial_timeout:
        description: At most this many seconds per trial (C(budget.trial_timeout)).
        type: int
      slots:
        description: At most this many trials at once on a host (C(runner.slots)).
        type: int
"""

    ARTIFACT_STORE = r"""
options:
  artifacts:
    description:
      - Optuna's artifact store, where each trial's files and its running checkpoint outlive its host (docs/fleet.md).
      - A folder (C(FileSystemArtifactStore)), the same shared path on every trainer host and the controller; or
        C(s3://BUCKET) or C(s3://BUCKET/PREFIX) (C(Boto3ArtifactStore)), an existing bucket of S3 or an S3-compatible
        server (I(s3.endpoint_url)).
      - Empty keeps the trials' files on their hosts, and a dead host's trial is retried from epoch 0.
    type: str
  s3:
    description:
      - How to reach an C(s3://) I(artifacts); unset suboptions fall back to boto3's own chain on the host
        (C(AWS_ACCESS_KEY_ID), C(AWS_SECRET_ACCESS_KEY), C(AWS_ENDPOINT_URL_S3)..., C(~/.aws), an instance role).
      - The keys are secrets, never logged; give them from the vault (C(autotune_artifact_s3)) or the controller's
        environment, which C(playbooks/fleet.yml) reads for you.
    type: dict
    suboptions:
      endpoint_url:
        description: URL of an S3-compatible server (C(http(s)://HOST[:PORT])); unset is AWS S3.
        type: str
      region:
        description: The bucket's region.
        type: str
      access_key:
        description: Access key id.
        type: str
      secret_key:
        description: Secret access key (with I(access_key)).
        type: str
      session_token:
        description: Session token of temporary credentials.
        type: str
"""
