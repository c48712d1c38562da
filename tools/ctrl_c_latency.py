"""How long `longtail train` takes to stop after Ctrl-C (SIGINT), and to print its line.

    python tools/ctrl_c_latency.py DATA RUN [train options...]

Starts `longtail train DATA --out RUN --epochs 100000`, waits for the first checkpoint,
sends SIGINT and prints the seconds until the "interrupted" line and until the process
has exited. RUN must not exist. docs/performance.md records the figures.
"""
import os, signal, subprocess, sys, time
data, run = sys.argv[1], sys.argv[2]
start = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from longtail.cli import main; sys.exit(main())")
p = subprocess.Popen([sys.executable, "-c", start, "train", data, "--out", run, "--epochs", "100000", *sys.argv[3:]],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)
while not os.path.exists(os.path.join(run, "checkpoints", "state.json")):
    time.sleep(0.2)
time.sleep(1.5)
t = time.monotonic(); p.send_signal(signal.SIGINT)
for line in p.stderr:
    if "interrupted" in line:
        print(f"message after {time.monotonic() - t:.2f} s")
p.wait()
print(f"exit {p.returncode} after {time.monotonic() - t:.2f} s; load {os.getloadavg()[0]:.1f}")
