"""An example maas catalog plugin: the `conv1d` architecture and the `waveforms` data set.

Installed beside the trainer, inference and registry (`pip install ./examples/plugins`),
its entry points add both to their catalog:

    maas catalog show conv1d
    maas train --model conv1d --dataset waveforms --epochs 5 --register-as waves --watch
"""
