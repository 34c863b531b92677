"""The `patchcore-edge` application: the command-line entry point (main.py) wiring the subcommands
of edge/, calibrate/ and export/, and the files the commands read at run time, shipped as package
data (configs/, systemd/, mqtt-schemas/: links to the top-level folders of the source tree, copied
into the wheel). Imports nothing itself: edge/ reads the data through edge/package_data.py."""
