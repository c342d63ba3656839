#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for Hooker's email tests.

Listens on 127.0.0.1 on a free port and prints one JSON line, {"port": N}, once it accepts
connections. Each delivered message is written to OUT_DIR as N.eml (the bytes received) and
N.json (envelope, whether TLS and AUTH were used, decoded headers and MIME parts); the .json file
appears last and atomically, so a reader never sees half a message.

Options: --starttls CERT KEY (offer STARTTLS and require it before MAIL), --implicit-tls CERT KEY
(TLS from the first byte, like port 465), --auth USER:PASSWORD (require AUTH PLAIN or LOGIN).
The server exits when its standard input closes, so it never outlives the test that started it.
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import socket
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Recorder:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        raw = envelope.original_content or b""
        base = os.path.join(self.out_dir, str(self.count))
        with open(base + ".eml", "wb") as f:
            f.write(raw)
        transport = server.transport
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "helo": session.host_name,
            "tls": transport is not None and transport.get_extra_info("ssl_object") is not None,
            "login": login_of(session),
            "raw_headers": raw_headers(raw),
        }
        record.update(parse(raw))
        with open(base + ".json.tmp", "w") as f:
            json.dump(record, f)
        os.replace(base + ".json.tmp", base + ".json")
        return "250 OK"


def login_of(session):
    data = session.auth_data
    if isinstance(data, LoginPassword):
        return data.login.decode("utf-8", "replace")
    return None


def raw_headers(raw):
    """Header name (lower case) -> value exactly as sent, unfolded."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    headers = {}
    for line in head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n"):
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return headers


def parse(raw):
    message = email.message_from_bytes(raw, policy=email.policy.default)
    headers = {name.lower(): str(value) for name, value in message.items()}
    parts = []
    for part in message.walk():
        if part.is_multipart():
            continue
        parts.append(
            {
                "content_type": part.get_content_type(),
                "charset": part.get_content_charset(),
                "content": part.get_content(),
            }
        )
    return {"content_type": message.get_content_type(), "headers": headers, "parts": parts}


def tls_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--implicit-tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--auth", metavar="USER:PASSWORD")
    args = parser.parse_args()
    # Failed handshakes and refused logins are what some tests provoke; keep stderr quiet.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)

    authenticator = None
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user.encode()
                and auth_data.password == password.encode()
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

    starttls = tls_context(*args.starttls) if args.starttls else None
    implicit = tls_context(*args.implicit_tls) if args.implicit_tls else None
    recorder = Recorder(args.out_dir)

    def factory():
        return SMTP(
            recorder,
            hostname="smtp.hooker.test",
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=authenticator,
            auth_required=authenticator is not None,
            # With implicit TLS the whole connection is encrypted, but aiosmtpd only knows
            # about STARTTLS; it would refuse AUTH without this.
            auth_require_tls=implicit is None,
        )

    async def serve():
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(factory, sock=sock, ssl=implicit)
        print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
