"""Generate a dbt project of N models for bench/transform: chains and fan-outs,
views with every tenth model a table, a not_null test per ten models."""
import os
import sys

n = int(sys.argv[1])
out = sys.argv[2]
os.makedirs(os.path.join(out, "models"), exist_ok=True)
with open(os.path.join(out, "dbt_project.yml"), "w") as f:
    f.write("name: gen\nprofile: gen\nconfig-version: 2\nmodels:\n  gen:\n    +materialized: view\n")
with open(os.path.join(out, "profiles.yml"), "w") as f:
    f.write("gen:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: gen.duckdb\n      schema: main\n      threads: 4\n")
tests = []
for i in range(n):
    lines = []
    if i % 10 == 9:
        lines.append("{{ config(materialized='table') }}")
    if i < 10:
        lines.append(f"select {i} as id, 'root' as v")
    else:
        # a chain to the previous model, or a fan-out from an earlier one
        parent = i - 1 if i % 3 else i // 3
        lines.append(f"select id + 1 as id, v from {{{{ ref('m_{parent}') }}}}")
    with open(os.path.join(out, "models", f"m_{i}.sql"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if i % 10 == 0:
        tests.append(f"  - name: m_{i}\n    columns:\n      - name: id\n        tests: [not_null]\n")
with open(os.path.join(out, "models", "schema.yml"), "w") as f:
    f.write("version: 2\nmodels:\n" + "".join(tests))
