#!/usr/bin/env python3
"""Checks what the chart renders and what users apply, with no API server.

  chart_check.py objects RENDERED.yaml...  every object against the Kubernetes
                                           OpenAPI schemas (strict: unknown
                                           fields fail); Prometheus Operator
                                           kinds are handed to check-monitoring.mjs
  chart_check.py crd CRD.yaml              the CRD itself (apiextensions/v1)
  chart_check.py promotions CRD.yaml INVALID_DIR VALID_DIR...
                                           every valid example passes the CRD's
                                           schema and its CEL rules; every
                                           invalid one is rejected with the
                                           reason its `# expect:` line names
  chart_check.py dashboards DIR SRC...     dashboard queries use only metric
                                           names the components register
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import celpy
import jsonschema
import kubernetes_validate
import yaml
from celpy import celtypes

K8S_VERSION = os.environ.get("PROMO_K8S_VERSION", "1.35.0")
HERE = os.path.dirname(os.path.abspath(__file__))


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def fail(msg):
    print(f"FAIL {msg}")
    return 1


def check_objects(paths):
    failures, custom = 0, []
    for path in paths:
        for d in docs(path):
            what = f"{os.path.basename(path)}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
            if d.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                custom.append(d)
                continue
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
                print(f"ok   {what} (Kubernetes {K8S_VERSION}, strict)")
            except kubernetes_validate.ValidationError as e:
                failures += fail(f"{what}: {e.message} at {'/'.join(map(str, e.path))}")
            except kubernetes_validate.SchemaNotFoundError as e:
                failures += fail(f"{what}: no schema ({e})")
    if custom:
        # ES modules resolve packages beside the script, so it runs from the
        # folder holding node_modules (scripts/k8s-tools.sh makes it).
        node_dir = os.environ["PROMO_NODE_DIR"]
        shutil.copy(os.path.join(HERE, "check-monitoring.mjs"), node_dir)
        out = subprocess.run(
            ["node", os.path.join(node_dir, "check-monitoring.mjs")],
            input=json.dumps(custom),
            text=True,
            capture_output=True,
        )
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
        failures += out.returncode != 0
    return failures


def check_crd(path):
    failures = 0
    for d in docs(path):
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            print(f"ok   {path}: {d['kind']} {d['metadata']['name']} (Kubernetes {K8S_VERSION}, strict)")
        except kubernetes_validate.ValidationError as e:
            failures += fail(f"{path}: {e.message}")
    return failures


def strict(schema):
    """The CRD schema as `kubectl apply --validate=strict` applies it:
    an object with declared properties takes no others."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        if schema.pop("nullable", False) and "type" in schema:
            schema["type"] = [schema["type"], "null"]
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def to_cel(value, schema):
    """A JSON value as CEL sees it under `schema`: date-time strings are
    timestamps, as in the API server."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(v, props.get(k, {})) for k, v in value.items()}
        )
    if isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items", {})) for v in value])
    if isinstance(value, str) and schema.get("format") == "date-time":
        return celtypes.TimestampType(value)
    return celpy.json_to_cel(value)


def cel_errors(value, schema, path="spec"):
    """Evaluates every x-kubernetes-validations rule on `value`."""
    errors = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        result = program.evaluate({"self": to_cel(value, schema)})
        if result is not True and result != celtypes.BoolType(True):
            errors.append(f"{path}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for k, v in value.items():
            sub = schema.get("properties", {}).get(k)
            if sub is not None and v is not None:
                errors += cel_errors(v, sub, f"{path}.{k}")
    return errors


def promotion_errors(doc, crd):
    version = next(v for v in crd["spec"]["versions"] if f"{crd['spec']['group']}/{v['name']}" == doc.get("apiVersion"))
    schema = version["schema"]["openAPIV3Schema"]
    errors = []
    if doc.get("kind") != crd["spec"]["names"]["kind"]:
        return [f"kind {doc.get('kind')} is not {crd['spec']['names']['kind']}"]
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    validator = jsonschema.Draft7Validator(strict(schema))
    errors += [f"{'.'.join(map(str, e.path)) or 'object'}: {e.message}" for e in validator.iter_errors(body)]
    if not errors:
        errors += cel_errors(body["spec"], schema["properties"]["spec"])
    return errors


def check_promotions(crd_path, invalid_dir, *valid_dirs):
    crd = docs(crd_path)[0]
    failures = 0
    valid = sorted(p for d in valid_dirs for p in glob.glob(os.path.join(d, "*.yaml")))
    invalid = sorted(glob.glob(os.path.join(invalid_dir, "*.yaml")))
    if not valid or not invalid:
        return fail(f"no examples found in {valid_dirs} or {invalid_dir}")
    for path in valid:
        for d in docs(path):
            errors = promotion_errors(d, crd)
            name = f"{os.path.basename(path)}: {d['metadata']['name']}"
            failures += fail(f"{name} rejected: {errors}") if errors else 0
            if not errors:
                print(f"ok   {name} accepted by the CRD")
    for path in invalid:
        text = open(path).read()
        expect = re.search(r"^# expect: (.+)$", text, re.M)
        if not expect:
            failures += fail(f"{path} has no '# expect:' line")
            continue
        errors = promotion_errors(yaml.safe_load(text), crd)
        name = os.path.basename(path)
        if not errors:
            failures += fail(f"{name} was accepted, should fail with: {expect.group(1)}")
        elif not any(expect.group(1) in e for e in errors):
            failures += fail(f"{name} rejected for {errors}, expected: {expect.group(1)}")
        else:
            print(f"ok   {name} rejected: {expect.group(1)}")
    return failures


def check_dashboards(directory, sources):
    exported = set()
    for src in sources:
        exported |= set(re.findall(r'"(promo_[a-z_]+)"', open(src).read()))
    failures = 0
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        dash = json.load(open(path))
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                for name in re.findall(r"\b(promo_[a-z_]+)", t["expr"]):
                    base = re.sub(r"_(bucket|sum|count)$", "", name)
                    if base not in exported:
                        failures += fail(f"{os.path.basename(path)} '{panel['title']}' queries {name}, which no component exports")
        print(f"ok   {os.path.basename(path)}: {len(dash['panels'])} panels, metrics all exported")
    return failures


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    failures = {
        "objects": lambda: check_objects(args),
        "crd": lambda: check_crd(args[0]),
        "promotions": lambda: check_promotions(*args),
        "dashboards": lambda: check_dashboards(args[0], args[1:]),
    }[cmd]()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
