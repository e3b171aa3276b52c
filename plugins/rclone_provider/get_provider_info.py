"""What Airflow's ProvidersManager reads through the ``apache_airflow_provider`` entry point.

Written as Airflow 3.3's providers declare it: the connection form is data
(``conn-fields`` stored in the connection's extra, ``ui-field-behaviour`` for the
standard fields), so the UI builds it without importing the hook.  The package
name and version are those of whichever distribution ships this package, as the
ProvidersManager requires them to match.
"""

from __future__ import annotations

from importlib import metadata

MODULE = __name__.rpartition(".")[0]


def _distribution() -> tuple[str, str]:
    names = metadata.packages_distributions().get(MODULE, [])
    if not names:  # imported from a source tree that was never installed
        return MODULE.replace("_", "-"), "0+unknown"
    return names[0], metadata.version(names[0])


def get_provider_info() -> dict:
    package_name, version = _distribution()
    return {
        "package-name": package_name,
        "name": "Rclone",
        "description": "Store and fetch objects on any of rclone's 70+ storage backends (S3, Google Drive, WebDAV, SFTP, crypt, ...).",
        "versions": [version],
        "integrations": [
            {"integration-name": "Rclone", "external-doc-url": "https://rclone.org/docs/", "tags": ["software"]},
        ],
        "hooks": [{"integration-name": "Rclone", "python-modules": [f"{MODULE}.hooks.rclone"]}],
        "operators": [{"integration-name": "Rclone", "python-modules": [f"{MODULE}.operators.rclone"]}],
        "connection-types": [
            {
                "connection-type": "rclone",
                "hook-class-name": f"{MODULE}.hooks.rclone.RcloneHook",
                "hook-name": "Rclone",
                "conn-fields": {
                    "type": {
                        "label": "Backend type",
                        "description": "rclone's backend name: local, s3, drive, webdav, sftp, crypt, ...",
                        "schema": {"type": "string", "minLength": 1},
                    },
                    "root": {
                        "label": "Root",
                        "description": "The folder (or bucket/path) on the remote under which every object is stored.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "options": {
                        "label": "Backend options",
                        "description": 'The backend\'s own options as JSON, e.g. {"url": "https://dav.example.com", "user": "backup"}; '
                                       "they reach rclone through its environment, never its command line.",
                        "schema": {"type": ["object", "null"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "login", "password", "port"],
                    "relabeling": {},
                    "placeholders": {"extra": '{"flags": ["--fast-list"], "wraps": {"type": "s3", ...}}'},
                },
            }
        ],
    }
