"""Text to speech for driving a head with text (paper 2.3): an acoustic model's mel for E_d and a waveform for E_c."""
