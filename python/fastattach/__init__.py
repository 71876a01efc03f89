"""fastattach: a Python debugger you can leave on in production."""
