"""Entry point for GitHub Actions: `python deployments/trigger.py FLOW/DEPLOYMENT --param k=v ...`."""

from diffbench.trigger import main

if __name__ == "__main__":
    raise SystemExit(main(prog="trigger.py"))
