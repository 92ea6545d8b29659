"""export: an app written out for an engine that runs fleets. systemd units and Kubernetes
manifests (pure renderers of an ``ExportSpec``), OCI image archives, and the daemon's
``export:*`` requests that hand dokuenctl a release's spec and slug.

May import: the core, isolate (who may read a file), supervise (the process command line),
deploy (releases) and apps.
"""

__all__ = ["kubernetes", "layer", "oci", "requests", "spec", "systemd"]
DEPENDS_ON: tuple[str, ...] = ("apps", "deploy", "isolate", "supervise")
