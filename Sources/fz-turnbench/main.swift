print("fz-turnbench: not built yet")
