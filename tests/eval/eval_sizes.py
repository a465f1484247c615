"""The input size of the eval tests' fixtures, importable by name from the test modules (a module-level
``from conftest import`` picks whichever folder's conftest was imported last in a full run)."""
SIZE = 160
