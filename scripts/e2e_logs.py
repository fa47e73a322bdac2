#!/usr/bin/env python3
"""Helpers of scripts/docker-e2e.sh: course-style agency files, the graders' ordered log reading,
and the checks of a run's logs and bets file.

  e2e_logs.py data DIR ROWS...             writes DIR/agency-K.csv with ROWS[K-1] rows each
  e2e_logs.py follow [--until RE] OUT TIMEOUT -- CMD...
                                           runs CMD (compose `logs -f`), writes its lines to OUT,
                                           stops at the first `exited with code` line (inclusive),
                                           or at the first line matching RE
  e2e_logs.py check LOG [options]          checks the lines of LOG (see --help)
  e2e_logs.py stored BETS DATA N           the bets file holds exactly the rows of DATA/agency-1..N

Every `action:` line is parsed by the graders' rule (tp0-tests): split on `|`; the first part is
the source, the second holds `action: X`, the third is `result: success|fail|in_progress`, every
other part is a detail `key: value` whose key (the text up to the last `:`) is not `source`,
`action` or `result`.
"""

import argparse
import csv
import hashlib
import io
import os
import queue
import re
import subprocess
import sys
import threading
import time

WINNING_NUMBER = 7574
EXIT_LINE = re.compile(r"^(\S+?)(?:_1)? exited with code (\d+)")
# docker/compose#11727 (Compose 2.26): every piped log line starts with an erase-line sequence
# (ESC[2K); docker-compose 1.29 colours its prefixes even into a pipe. Both are compose's.
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def clean(line):
    return ANSI.sub("", line.rstrip("\r\n"))


def agency_rows(agency, count):
    """Course-style rows (`A,B,00000042,2000-01-01,42`); every 7th row, shifted by agency, wins."""
    rows = []
    for i in range(count):
        wins = i % 7 == agency % 7
        number = WINNING_NUMBER if wins else (i * 37 + agency * 11) % 10000
        if number == WINNING_NUMBER and not wins:
            number += 1
        first = ["Ana", "Luis", "María José", "Juan", "Sofía"][i % 5]
        last = ["Pérez", "Gómez", "O'Neil", "Núñez"][(i + agency) % 4]
        document = f"{agency:02d}{i:06d}"
        birth = f"{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        rows.append([first, last, document, birth, str(number)])
    return rows


def cmd_data(args):
    os.makedirs(args.dir, exist_ok=True)
    for old in os.listdir(args.dir):
        if old.startswith("agency-") and old.endswith(".csv"):
            os.remove(os.path.join(args.dir, old))
    for agency, count in enumerate(args.rows, start=1):
        path = os.path.join(args.dir, f"agency-{agency}.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerows(agency_rows(agency, count))
        os.chmod(path, 0o644)


def read_agency(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f) if row]


def cmd_follow(args):
    """The graders' reading: lines in the order compose prints them, up to the first exit line."""
    child = subprocess.Popen(args.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, encoding="utf-8", errors="replace")
    # A reader thread, so the deadline holds even when compose goes silent (it has: once in CI,
    # docker-compose 1.29 printed nothing more after the agencies' last lines).
    lines = queue.Queue()

    def read():
        for raw in child.stdout:
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    started = time.monotonic()
    deadline = started + args.timeout
    last_line_at = started
    found = False
    until = re.compile(args.until) if args.until else EXIT_LINE
    with open(args.out, "w", encoding="utf-8") as out:
        while not found:
            try:
                raw = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if raw is None:
                break
            last_line_at = time.monotonic()
            line = clean(raw)
            out.write(line + "\n")
            found = until.search(line) is not None
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
    if not found:
        silent = time.monotonic() - last_line_at
        fail(f"no line matching {until.pattern!r} within {args.timeout:g}s; the last line came "
             f"{silent:.1f}s before the end (see {args.out})")


def graders_parse(line):
    """(source, action, result, details) of an `action:` line by the graders' rule, or fail."""
    parts = line.split("|")
    source = parts[0].strip()
    if not source or len(parts) < 3:
        fail(f"not source | action | result: {line!r}")
    match = re.search(r"action: (\S+)$", parts[1].strip())
    if not match:
        fail(f"no `action: X` in the second field: {line!r}")
    result = parts[2].strip()
    if result not in ("result: success", "result: fail", "result: in_progress"):
        fail(f"third field is not result: success|fail|in_progress: {line!r}")
    details = {}
    for part in parts[3:]:
        if ":" not in part:
            fail(f"detail {part!r} without a colon: {line!r}")
        key, value = part.rsplit(":", 1)
        key = key.strip()
        if not key or key in ("source", "action", "result"):
            fail(f"detail named {key!r}: {line!r}")
        details[key] = value.strip()
    return source, match.group(1), result.split(": ")[1], details


def receipt(agency, rows):
    """(bets, sha256 hex) of an agency's rows in the bets file's encoding (`agency,` and the row,
    Python's csv.writer quoting, `\r\n`): what the central's receipt and the agency's must be."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([str(agency), *row[:4], str(int(row[4]))])
    return len(rows), hashlib.sha256(out.getvalue().encode("utf-8")).hexdigest()


def field(line, name):
    """A field's value by our own format (`key: value` between ` | `)."""
    for part in line.split(" | "):
        if part.startswith(name + ": "):
            return part[len(name) + 2:].strip()
    return None


def cmd_check(args):
    with open(args.log, encoding="utf-8") as f:
        lines = [clean(line) for line in f]
    events = []  # (index, source, action, result, line)
    exits = []
    for index, line in enumerate(lines):
        exit_match = EXIT_LINE.match(line)
        if exit_match:
            exits.append((index, exit_match.group(1), int(exit_match.group(2))))
            continue
        if "action:" not in line:
            continue
        source, action, result, _ = graders_parse(line)
        source = re.sub(r"_1$", "", source)
        if action == "exit":
            fail(f"{source} logged an `action: exit` line of its own: {line!r}")
        if result == "fail" and not args.allow_fail:
            fail(f"a normal run logged result: fail: {line!r}")
        events.append((index, source, action, result, line))
    parsed = len(events)

    def of(source=None, action=None, result="success"):
        return [e for e in events
                if (source is None or e[1] == source) and (action is None or e[2] == action)
                and (result is None or e[3] == result)]

    for expected in args.source:
        if not of(source=expected, result=None):
            fail(f"no line from source {expected!r}")
    if args.server_config:
        configs = of("server", "config")
        if len(configs) != 1:
            fail(f"server logged {len(configs)} config lines")
        for pair in args.server_config.split(","):
            key, value = pair.split("=", 1)
            if field(configs[0][4], key) != value:
                fail(f"server config line lacks {key}: {value}: {configs[0][4]!r}")
    for agency in range(1, args.agencies + 1):
        if args.client_config:
            configs = of(f"client{agency}", "config")
            if len(configs) != 1:
                fail(f"client{agency} logged {len(configs)} config lines")
            expected = f"client_id={agency}," + args.client_config
            for pair in expected.split(","):
                key, value = pair.split("=", 1)
                if field(configs[0][4], key) != value:
                    fail(f"client{agency} config line lacks {key}: {value}: {configs[0][4]!r}")
    if args.data is None:
        print(f"   {len(lines)} lines, {parsed} action lines parsed by the graders' rule")
        return
    centrals = args.central or ["server"]
    draws = [e for e in events if e[1] in centrals and e[2] == "sorteo" and e[3] == "success"]
    if len(draws) != 1:
        fail(f"the central(s) {', '.join(centrals)} logged {len(draws)} sorteo lines, expected 1")
    draw_at = draws[0][0]
    digests = b""
    for agency in range(1, args.agencies + 1):
        rows = read_agency(os.path.join(args.data, f"agency-{agency}.csv"))
        bets, sha256 = receipt(agency, rows)
        digests += bytes.fromhex(sha256) if bets else b""
        receipts = of(f"client{agency}", "recibo")
        if len(receipts) != 1 or (field(receipts[0][4], "apuestas"),
                                  field(receipts[0][4], "sha256")) != (str(bets), sha256):
            fail(f"client{agency}: expected one `recibo | result: success | apuestas: {bets} | "
                 f"sha256: {sha256}` line, got {[e[4] for e in receipts]}")
        winners = sum(1 for row in rows if int(row[-1]) == WINNING_NUMBER)
        batches = [int(field(e[4], "cantidad")) for e in events
                   if e[1] in centrals and e[2] == "apuesta_recibida" and e[3] == "success"
                   and field(e[4], "agency") == str(agency)]
        if sum(batches) != len(rows):
            fail(f"agency {agency}: the central logged {sum(batches)} bets received, "
                 f"its file has {len(rows)}")
        if args.batch and (any(b != args.batch for b in batches[:-1])
                           or not 0 < batches[-1] <= args.batch):
            fail(f"agency {agency}: batches of {batches}, expected {args.batch} each "
                 f"(the last one shorter)")
        answers = of(f"client{agency}", "consulta_ganadores")
        if len(answers) != 1:
            fail(f"client{agency} logged {len(answers)} consulta_ganadores lines before "
                 f"the first exit line")
        got = field(answers[0][4], "cant_ganadores")
        if got != str(winners):
            fail(f"client{agency}: cant_ganadores: {got}, its file has {winners} winners")
        # Only the graders' reading is in time order; `compose logs` groups lines by container.
        if args.ordered and answers[0][0] < draw_at:
            fail(f"client{agency}'s consulta_ganadores was printed before the sorteo")
    if field(draws[0][4], "sha256") != hashlib.sha256(digests).hexdigest():
        fail(f"the sorteo's sha256 is not that of the agencies' digests: {draws[0][4]!r}")
    for index, source, code in exits:
        if code != 0:
            fail(f"{source} exited with code {code}")
    if args.ordered:
        first_exit = exits[0][0] if exits else len(lines)
        late = [e for e in events if e[0] > first_exit and e[2] in (
            "apuesta_recibida", "sorteo", "consulta_ganadores")]
        if late:
            fail(f"read after the first exit line: {late[0][4]!r}")
    print(f"   {len(lines)} lines, {parsed} action lines parsed by the graders' rule; "
          f"one sorteo{', before every consulta_ganadores' if args.ordered else ''}; "
          f"every agency's rows, winners and receipt; the draw's digest")


def cmd_stored(args):
    expected = []
    for agency in range(1, args.agencies + 1):
        for row in read_agency(os.path.join(args.data, f"agency-{agency}.csv")):
            expected.append((str(agency), *row[:4], str(int(row[4]))))
    with open(args.bets, newline="", encoding="utf-8") as f:
        stored = [tuple(row) for row in csv.reader(f) if row]
    if sorted(stored) != sorted(expected):
        missing = len(set(expected) - set(stored))
        extra = len(set(stored) - set(expected))
        fail(f"the bets file has {len(stored)} rows, expected {len(expected)} "
             f"({missing} missing, {extra} unexpected)")
    print(f"   bets file: exactly the {len(expected)} rows of the agency files")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data")
    data.add_argument("dir")
    data.add_argument("rows", type=int, nargs="+")
    follow = sub.add_parser("follow")
    follow.add_argument("out")
    follow.add_argument("timeout", type=float)
    follow.add_argument("--until", help="stop at the first line matching this regex instead")
    follow.add_argument("cmd", nargs=argparse.REMAINDER)
    check = sub.add_parser("check")
    check.add_argument("log")
    check.add_argument("--agencies", type=int, default=0)
    check.add_argument("--data", help="the agency files' directory: check rows and winners")
    check.add_argument("--batch", type=int, help="every batch but the last has this size")
    check.add_argument("--server-config", help="key=value,… the server's config line shows")
    check.add_argument("--client-config", help="key=value,… every client's config line shows")
    check.add_argument("--source", action="append", default=[], help="a source that must log")
    check.add_argument("--central", action="append", default=[],
                       help="a central's source (repeat for several; default: server)")
    check.add_argument("--ordered", action="store_true", help="LOG ends at the first exit line")
    check.add_argument("--allow-fail", action="store_true", help="not a normal run")
    stored = sub.add_parser("stored")
    stored.add_argument("bets")
    stored.add_argument("data")
    stored.add_argument("agencies", type=int)
    args = parser.parse_args()
    if args.command == "follow" and args.cmd and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    {"data": cmd_data, "follow": cmd_follow, "check": cmd_check, "stored": cmd_stored}[
        args.command](args)


if __name__ == "__main__":
    main()
