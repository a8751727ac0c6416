# The two commands of the README; each creates or reuses .venv and installs what it needs.
.PHONY: book test clean
book:
	bash scripts/book.sh
test:
	bash scripts/test.sh
clean:
	rm -rf _build notebooks/*.ipynb
