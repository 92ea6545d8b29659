"""Kubernetes manifests of one release: pure, YAML with sorted keys, one file per object,
named so that ``kubectl apply -f DIR`` applies them in order.

    00-config.secret.yaml   Secret APP-config-vN: the config (secret, mode 0600)
    10-release.job.yaml     Job APP-release-vN: the release phase, before the rollout
                            (Helm: a pre-install/pre-upgrade hook; Argo CD: a PreSync hook)
    20-TYPE.deployment.yaml a Deployment per process type, replicas from the formation
    30-web.service.yaml     Service APP-web: port 80 to the container's PORT
    40-ingress.yaml         Ingress APP: the app's host names (+ TLS secret names)

Health (web only, as on Dokuen): a startupProbe gets the boot timeout, then readiness and
liveness probes: an HTTP GET of DOKUEN_HEALTHCHECK_PATH, else a TCP connect to PORT.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from dokuen.export.spec import ExportSpec, File, ProcessType

PROBE_PERIOD = 2  # seconds between probes while a new pod boots
RELEASE_HOOKS = {
    "helm.sh/hook": "pre-install,pre-upgrade",
    "helm.sh/hook-delete-policy": "before-hook-creation",
    "argocd.argoproj.io/hook": "PreSync",
    "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
}


@dataclass(frozen=True)
class KubernetesTarget:
    """The cluster's side: the image (``dokuenctl image``), the container's PORT, and the
    TLS secret of each host name that has a certificate."""

    image: str
    port: int = 5000
    tls_secrets: Mapping[str, str] = field(default_factory=dict)
    ingress_class: str | None = None


def render_kubernetes(spec: ExportSpec, target: KubernetesTarget) -> list[File]:
    """Every file of the export, in apply order, the same bytes for the same input."""
    files = [File("00-config.secret.yaml", _dump(_secret(spec)), secret=True)]
    if spec.release_command is not None:
        files.append(File("10-release.job.yaml", _dump(_job(spec, target))))
    files += [
        File(f"20-{t.name}.deployment.yaml", _dump(_deployment(spec, target, t)))
        for t in spec.types
    ]
    if any(t.name == "web" for t in spec.types):
        files.append(File("30-web.service.yaml", _dump(_service(spec, target))))
        if spec.hosts:
            files.append(File("40-ingress.yaml", _dump(_ingress(spec, target))))
    return files


class _Dumper(yaml.SafeDumper):
    """Plain YAML: a value used twice (a probe's check) is written out twice, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(document: dict[str, Any]) -> bytes:
    text = yaml.dump(document, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=100)
    return f"---\n{text}".encode()


def _labels(spec: ExportSpec, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": spec.app,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "dokuen-export",
    }


def _metadata(spec: ExportSpec, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {**_labels(spec, component), "dokuen.io/release": spec.release},
    }


def secret_name(spec: ExportSpec) -> str:
    """Named by release: a new config is a new Secret, and Deployments roll to it."""
    return f"{spec.app}-config-{spec.release}"


def _secret(spec: ExportSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, secret_name(spec), "config"),
        "type": "Opaque",
        "stringData": dict(sorted(spec.env.items())),
    }


def _container(
    spec: ExportSpec, target: KubernetesTarget, process: ProcessType, dyno: bool
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "PORT", "value": str(target.port)},
        {"name": "APP", "value": spec.app},
    ]
    if dyno:  # the pod's name stands for TYPE.N
        env.append({"name": "DYNO", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    container: dict[str, Any] = {
        "name": process.name,
        "image": target.image,
        "command": ["/bin/sh", "-c", process.shell],
        "env": env,
        "envFrom": [{"secretRef": {"name": secret_name(spec)}}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    limits: dict[str, str] = {}
    if spec.memory_limit is not None:  # the whole app's on Dokuen: each pod's here
        limits["memory"] = str(spec.memory_limit)
    if limits:
        container["resources"] = {"limits": limits, "requests": dict(limits)}
    if process.name == "web":
        container["ports"] = [{"containerPort": target.port, "name": "http", "protocol": "TCP"}]
        container.update(_probes(spec))
    return container


def _probes(spec: ExportSpec) -> dict[str, Any]:
    if spec.health_path is not None:
        check: dict[str, Any] = {"httpGet": {"path": spec.health_path, "port": "http"}}
    else:
        check = {"tcpSocket": {"port": "http"}}
    return {
        "startupProbe": {
            **check,
            "periodSeconds": PROBE_PERIOD,
            "failureThreshold": max(1, math.ceil(spec.boot_timeout / PROBE_PERIOD)),
        },
        "readinessProbe": {**check, "periodSeconds": 5, "failureThreshold": 1},
        "livenessProbe": {**check, "periodSeconds": 10, "failureThreshold": 3},
    }


def _pod(
    spec: ExportSpec, target: KubernetesTarget, process: ProcessType, restart: str, dyno: bool
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "containers": [_container(spec, target, process, dyno)],
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": math.ceil(spec.stop_timeout),
    }
    if spec.uid is not None:
        pod["securityContext"] = {
            "runAsNonRoot": True,
            "runAsUser": spec.uid,
            "runAsGroup": spec.gid if spec.gid is not None else spec.uid,
        }
    return pod


def _deployment(spec: ExportSpec, target: KubernetesTarget, process: ProcessType) -> dict[str, Any]:
    labels = _labels(spec, process.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, f"{spec.app}-{process.name}", process.name),
        "spec": {
            "replicas": process.count,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "dokuen.io/release": spec.release}},
                "spec": _pod(spec, target, process, "Always", dyno=True),
            },
        },
    }


def _job(spec: ExportSpec, target: KubernetesTarget) -> dict[str, Any]:
    assert spec.release_command is not None
    metadata = _metadata(spec, f"{spec.app}-release-{spec.release}", "release")
    metadata["annotations"] = dict(RELEASE_HOOKS)
    process = spec.release_command
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,  # a failed release phase stops the deploy, as on Dokuen
            "template": {
                "metadata": {"labels": _labels(spec, "release")},
                "spec": _pod(spec, target, process, "Never", dyno=False),
            },
        },
    }


def _service(spec: ExportSpec, target: KubernetesTarget) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, f"{spec.app}-web", "web"),
        "spec": {
            "selector": _labels(spec, "web"),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _ingress(spec: ExportSpec, target: KubernetesTarget) -> dict[str, Any]:
    backend = {"service": {"name": f"{spec.app}-web", "port": {"name": "http"}}}
    rules = [
        {
            "host": host,
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
        }
        for host in spec.hosts
    ]
    ingress: dict[str, Any] = {"rules": rules}
    if target.ingress_class:
        ingress["ingressClassName"] = target.ingress_class
    by_secret: dict[str, list[str]] = {}
    for host in spec.hosts:
        if host in target.tls_secrets:
            by_secret.setdefault(target.tls_secrets[host], []).append(host)
    if by_secret:
        ingress["tls"] = [
            {"hosts": hosts, "secretName": name} for name, hosts in sorted(by_secret.items())
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _metadata(spec, spec.app, "web"),
        "spec": ingress,
    }
