"""Demo driver (run it through ./scripts/demo.sh, which installs everything first)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.seaweed import Identity, SeaweedServer  # noqa: E402

WORK = REPO / ".demo"
BUCKET = "demo-results"
DAG_ID = "s3_publish_fetch_roundtrip"

READ_RESULT = """
import json
from sqlalchemy import select
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
with create_session() as s:
    run_id = s.scalars(select(DagRun.run_id).where(DagRun.dag_id == {dag!r}).order_by(DagRun.id.desc())).first()
    rows = s.execute(select(XComModel.task_id, XComModel.value).where(
        XComModel.dag_id == {dag!r}, XComModel.run_id == run_id, XComModel.key == "return_value")).all()
values = {{t: XComModel.deserialize_value(type("Row", (), {{"value": v}})) for t, v in rows}}
print(json.dumps({{"run_id": run_id, **values}}))
"""


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    admin = Identity(
        "demo",
        "DEMO" + secrets.token_hex(8).upper(),
        secrets.token_urlsafe(24),
        ("Admin", "Read", "List", "Tagging", "Write"),
    )
    step("Starting SeaweedFS (weed mini) on loopback")
    with SeaweedServer(WORK / "seaweed", [admin]) as server:
        print(f"S3 endpoint {server.endpoint} (pid {server.pid})")
        server.create_bucket(BUCKET, versioned=True)
        print(f"bucket {BUCKET} created, versioning on")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
        env.update(
            AIRFLOW_HOME=str(WORK / "airflow"),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags_examples"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
                {
                    "conn_type": "aws",
                    "login": admin.access_key,
                    "password": admin.secret_key,
                    "extra": {"endpoint_url": server.endpoint, "region_name": "us-east-1"},
                }
            ),
        )
        airflow = str(REPO / ".venv" / "bin" / "airflow")
        log = WORK / "airflow.log"
        step("Creating the Airflow metadata DB (airflow db migrate)")
        run([airflow, "db", "migrate"], env, log)
        step(f"Running the DAG {DAG_ID} with Airflow (airflow dags test)")
        conf = {"bucket": BUCKET, "fetch_root": str(WORK / "fetched")}
        started = time.monotonic()
        run([airflow, "dags", "test", DAG_ID, "--conf", json.dumps(conf)], env, log)
        print(f"DAG run finished in {time.monotonic() - started:.1f} s: publish -> fetch -> check all succeeded")
        out = subprocess.run(
            [str(REPO / ".venv" / "bin" / "python"), "-c", READ_RESULT.format(dag=DAG_ID)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        xcoms = json.loads(out.stdout.strip().splitlines()[-1])
        result = xcoms["publish"]
        step("PublishedResult (XCom return_value of the publish task)")
        print(json.dumps(result, indent=2))
        step("Proving the round trip")
        params = result["Params"]
        body = server.client(admin).get_object(
            Bucket=params["Bucket"], Key=params["Key"], VersionId=params["VersionID"]
        )
        digest = base64.b64encode(hashlib.sha256(body["Body"].read()).digest()).decode()
        print(f"sha256 of the stored object, downloaded again: {digest}")
        print(f"ChecksumSHA256 in the PublishedResult:         {params['ChecksumSHA256']}")
        if digest != params["ChecksumSHA256"]:
            print("MISMATCH", file=sys.stderr)
            return 1
        fetched = Path(xcoms["fetch"])
        print(f"fetched and unpacked by S3FetchOperator into {fetched}:")
        for rel, sha in xcoms["check"].items():
            print(f"  {rel:28} sha256 {sha[:16]}...  identical to the source")
        print("\nRound trip verified. Full Airflow log: " + str(log))
    return 0


def run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("a") as handle:
        handle.write(f"\n$ {' '.join(cmd[:3])}\n")
        handle.flush()
        proc = subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        print(log.read_text()[-6000:], file=sys.stderr)
        raise SystemExit(f"{' '.join(cmd[:3])} failed with exit code {proc.returncode}; see {log}")


if __name__ == "__main__":
    sys.exit(main())
