"""A team's own code, as the extension points take it (``module:function``): tests name it in configs."""
