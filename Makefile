.PHONY: setup demo test lint bench run

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/vatel-edge demo

test: setup
	.venv/bin/ruff check vatel_edge tests bench
	.venv/bin/mypy
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check vatel_edge tests bench
	.venv/bin/mypy

bench: setup
	.venv/bin/python bench/run
