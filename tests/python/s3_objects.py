#!/usr/bin/env python3
"""Looks at and tampers with shipped forensic log segments in an S3 API server (moto in the
tests) with the real AWS client, boto3. Prints one JSON document.

usage: s3_objects.py ENDPOINT create-bucket BUCKET
       s3_objects.py ENDPOINT dump BUCKET PREFIX
           [{"key", "sha256": metadata, "actual": sha256 of the bytes, "text": gunzipped}]
       s3_objects.py ENDPOINT edit BUCKET KEY LINE
           rewrites line LINE (1-based) of the object, as someone with write access to the
           bucket would: recompressed, its sha256 metadata recomputed.
Credentials: moto's test keys ("testing"), as the tests give the agent.
"""

import gzip
import hashlib
import json
import sys

try:
    import boto3
except ImportError:
    sys.stderr.write(
        "python module missing: boto3 (install with: python3 -m pip install 'moto[server]'; tests/run.sh does)\n"
    )
    sys.exit(3)


def main():
    endpoint, command = sys.argv[1], sys.argv[2]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if command == "create-bucket":
        s3.create_bucket(Bucket=sys.argv[3])
        print(json.dumps({"created": sys.argv[3]}))
    elif command == "dump":
        bucket, prefix = sys.argv[3], sys.argv[4]
        out = []
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        for item in sorted(listed.get("Contents", []), key=lambda i: i["Key"]):
            got = s3.get_object(Bucket=bucket, Key=item["Key"])
            body = got["Body"].read()
            out.append(
                {
                    "key": item["Key"],
                    "sha256": got.get("Metadata", {}).get("sha256"),
                    "actual": hashlib.sha256(body).hexdigest(),
                    "text": gzip.decompress(body).decode(),
                }
            )
        print(json.dumps(out))
    elif command == "edit":
        bucket, key, line = sys.argv[3], sys.argv[4], int(sys.argv[5])
        got = s3.get_object(Bucket=bucket, Key=key)
        lines = gzip.decompress(got["Body"].read()).decode().split("\n")
        lines[line - 1] = lines[line - 1].replace('"pad":"p', '"pad":"q', 1)
        body = gzip.compress("\n".join(lines).encode())
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            Metadata={"sha256": hashlib.sha256(body).hexdigest()},
        )
        print(json.dumps({"edited": key, "line": line}))
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main()
