print("fz-portal: not built yet")
