"""Static checks of docker-compose.yml and the Dockerfile.

No Docker engine runs on the CI machines, so `docker compose up` cannot be
tried there; this checks what can be checked without one: the compose file
parses, has the services, ports and health check the README promises, and
every file it and the Dockerfile refer to exists in the repository.
Prints one line per problem and exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    problems = []
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose.get("services", {})
    for name in ("elasticsearch", "kibana", "eventstash"):
        if name not in services:
            problems.append(f"service {name!r} missing")
    if problems:
        return report(problems)

    es = services["elasticsearch"]
    if not re.search(r"elasticsearch:8\.", es.get("image", "")):
        problems.append(f"elasticsearch image is not Elasticsearch 8: {es.get('image')}")
    if str(es.get("environment", {}).get("xpack.security.enabled")) != "false":
        problems.append("elasticsearch: security must be off for local use")
    if "healthcheck" not in es:
        problems.append("elasticsearch: no healthcheck")

    kibana_hosts = services["kibana"].get("environment", {}).get("ELASTICSEARCH_HOSTS", "")
    if "elasticsearch:9200" not in kibana_hosts:
        problems.append(f"kibana does not point at the elasticsearch service: {kibana_hosts}")

    agent = services["eventstash"]
    if agent.get("build") not in (".", {"context": "."}):
        problems.append(f"eventstash must be built from the repository root: {agent.get('build')}")
    if "42043:42043" not in agent.get("ports", []):
        problems.append("eventstash: port 42043 is not published")
    command = agent.get("command", [])
    config = command[command.index("-c") + 1] if "-c" in command else None
    if config is None or not (ROOT / config).is_file():
        problems.append(f"eventstash: pipeline file {config!r} does not exist")
    else:
        pipeline = (ROOT / config).read_text()
        if "${ELASTICSEARCH_HOSTS" not in pipeline:
            problems.append(f"{config} does not read ELASTICSEARCH_HOSTS")
    hosts = agent.get("environment", {}).get("ELASTICSEARCH_HOSTS", "")
    if hosts != "http://elasticsearch:9200":
        problems.append(f"eventstash: ELASTICSEARCH_HOSTS is {hosts!r}, not the elasticsearch service")
    depends = agent.get("depends_on", {})
    if depends.get("elasticsearch", {}).get("condition") != "service_healthy":
        problems.append("eventstash must wait for a healthy elasticsearch")

    prometheus = services.get("prometheus")
    if prometheus is not None:
        content = compose.get("configs", {}).get("prometheus", {}).get("content", "")
        if "eventstash:9600" not in content:
            problems.append("prometheus does not scrape eventstash:9600")

    dockerfile = (ROOT / "Dockerfile").read_text()
    if not re.search(r"^FROM .+ AS build$", dockerfile, re.M) or dockerfile.count("\nFROM ") < 1:
        problems.append("Dockerfile is not a multi-stage build")
    for source in re.findall(r"^COPY (?!--from)(\S+) \S+$", dockerfile, re.M):
        if source != "." and not (ROOT / source).exists():
            problems.append(f"Dockerfile copies {source}, which does not exist")
    if "EXPOSE 42043" not in dockerfile:
        problems.append("Dockerfile does not expose 42043")
    return report(problems)


def report(problems) -> int:
    for problem in problems:
        print(problem)
    if not problems:
        print("ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
