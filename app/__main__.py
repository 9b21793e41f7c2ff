"""`python -m app --checkpoint DIR`: see app/server.py."""

from app.server import main

if __name__ == "__main__":
    main()
