"""The floor under any tool that builds a dbt project on DuckDB: the same
compiled SQL that `weir transform build` ran (from target/run and
manifest.json), executed in order on one DuckDB connection with no tool
around it, on a copy of the warehouse file. Prints the seconds, including the
close (DuckDB writes the new tables out then).

usage: duckdb_floor.py DBT_PROJECT_DIR WAREHOUSE.duckdb COPY.duckdb
"""
import json
import shutil
import sys
import time

import duckdb

root, warehouse, copy = sys.argv[1:4]
manifest = json.load(open(f"{root}/target/manifest.json"))
results = json.load(open(f"{root}/target/run_results.json"))
project = manifest["metadata"]["project_name"]
shutil.copy(warehouse, copy)
con = duckdb.connect(copy)
t0 = time.time()
# run_results lists nodes in the order they finished: an order that respects the graph.
for r in results["results"]:
    node = manifest["nodes"][r["unique_id"]]
    generic = node["resource_type"] == "test" and node.get("test_metadata")
    path = node["name"] + ".sql" if generic else node["path"]
    sql = open(f"{root}/target/run/{project}/{path}").read()
    materialized = node["config"].get("materialized")
    relation = node.get("relation_name")
    if node["resource_type"] == "test":
        con.execute(sql).fetchall()
    elif materialized == "table":
        con.execute(f"create or replace table {relation} as ({sql})")
    elif materialized == "view":
        con.execute(f"create or replace view {relation} as ({sql})")
con.close()
print(f"{time.time() - t0:.2f}")
