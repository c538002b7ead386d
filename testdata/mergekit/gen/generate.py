"""Regenerates testdata/mergekit: MERGEKIT=/path/to/mergekit PYTHONHASHSEED=0 /usr/bin/python3 generate.py
(torch and numpy; about a minute). Set OUT to write elsewhere."""
import cases, rand

if __name__ == "__main__":
    cases.main()
    rand.main()
