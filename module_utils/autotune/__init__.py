"""Shared code of the autotune Ansible modules (imported as ansible.module_utils.autotune.*)."""
