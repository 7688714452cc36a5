"""Lip sync: the Wav2Lip-style expert D_lip and the Dynamic-Sync Encoder E_d trained against it (paper 2.2)."""
