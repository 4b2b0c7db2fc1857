//! The x86 XSAVE area (Ferry keeps the raw `NT_X86_XSTATE` regset) ↔ CRIU's
//! `user_x86_fpregs_entry` (the FXSAVE fields, then the XSAVE components one by one).
//! Component offsets in the standard format are the processor's (CPUID leaf 0xD): an AMD
//! processor without MPX packs AVX-512 lower than an Intel one does, so both directions use
//! the offsets of the machine running the bridge.

use crate::pb;

/// XSAVE components CRIU keeps: (feature bit, bytes CRIU keeps).
const COMPONENTS: [(u32, usize); 7] = [
    (2, 256),  // AVX: upper halves of YMM0-15
    (3, 64),   // MPX BNDREGS
    (4, 16),   // MPX BNDCSR
    (5, 64),   // AVX-512 opmask k0-k7
    (6, 512),  // AVX-512 ZMM_Hi256
    (7, 1024), // AVX-512 Hi16_ZMM
    (9, 8),    // PKRU
];

/// (offset, size) of XSAVE component `bit` in the standard format on this machine, `None`
/// when the processor lacks it.
fn component(bit: u32) -> Option<(usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    {
        let r = std::arch::x86_64::__cpuid_count(0xd, bit);
        (r.eax != 0).then_some((r.ebx as usize, r.eax as usize))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = bit;
        None
    }
}

/// Size of the XSAVE area of this machine's enabled features (what `PTRACE_GETREGSET`
/// `NT_X86_XSTATE` returns).
pub fn machine_size() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

fn u64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

fn rd16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn rd64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// CRIU's fpregs from an XSAVE area; the second value names what did not fit.
pub fn to_criu(x: &[u8]) -> (pb::X86Fpregs, Option<String>) {
    let mut x = x.to_vec();
    let len = x.len();
    if len < 512 {
        x.resize(512, 0);
    }
    let mut fp = pb::X86Fpregs {
        cwd: rd16(&x, 0),
        swd: rd16(&x, 2),
        twd: rd16(&x, 4),
        fop: rd16(&x, 6),
        rip: rd64(&x, 8),
        rdp: rd64(&x, 16),
        mxcsr: rd32(&x, 24),
        mxcsr_mask: rd32(&x, 28),
        st_space: u32s(&x[32..160]),
        xmm_space: u32s(&x[160..416]),
        padding: u32s(&x[416..512]),
        xsave: None,
    };
    let mut lost = None;
    if len >= 576 {
        let mut xs = pb::X86Xsave {
            xstate_bv: rd64(&x, 512),
            ..Default::default()
        };
        let mut covered = 576;
        for (bit, keep) in COMPONENTS {
            let Some((off, size)) = component(bit) else {
                continue;
            };
            if off + size > len {
                continue;
            }
            covered = covered.max(off + size);
            let b = &x[off..off + size.min(keep)];
            match bit {
                2 => xs.ymmh_space = u32s(b),
                3 => xs.bndreg_state = u64s(b),
                4 => xs.bndcsr_state = u64s(b),
                5 => xs.opmask_reg = u64s(b),
                6 => xs.zmm_upper = u64s(b),
                7 => xs.hi16_zmm = u64s(b),
                _ => xs.pkru = u32s(b),
            }
        }
        if x[covered..].iter().any(|&b| b != 0) {
            lost = Some(format!(
                "XSAVE components beyond byte {covered} of {len} (AMX tiles or others CRIU does not keep)"
            ));
        }
        fp.xsave = Some(xs);
    }
    (fp, lost)
}

/// An XSAVE area of this machine's size from CRIU's fpregs.
pub fn from_criu(fp: &pb::X86Fpregs) -> Result<Vec<u8>, String> {
    let size = machine_size().max(512);
    let mut x = vec![0u8; size];
    let put = |x: &mut Vec<u8>, at: usize, b: &[u8]| {
        x[at..at + b.len()].copy_from_slice(b);
    };
    let words32 = |v: &[u32], n: usize, what: &str| -> Result<Vec<u8>, String> {
        if v.len() != n {
            return Err(format!("fpregs.{what} has {} words, expected {n}", v.len()));
        }
        Ok(v.iter().flat_map(|w| w.to_le_bytes()).collect())
    };
    put(&mut x, 0, &(fp.cwd as u16).to_le_bytes());
    put(&mut x, 2, &(fp.swd as u16).to_le_bytes());
    put(&mut x, 4, &(fp.twd as u16).to_le_bytes());
    put(&mut x, 6, &(fp.fop as u16).to_le_bytes());
    put(&mut x, 8, &fp.rip.to_le_bytes());
    put(&mut x, 16, &fp.rdp.to_le_bytes());
    put(&mut x, 24, &fp.mxcsr.to_le_bytes());
    put(&mut x, 28, &fp.mxcsr_mask.to_le_bytes());
    put(&mut x, 32, &words32(&fp.st_space, 32, "st_space")?);
    put(&mut x, 160, &words32(&fp.xmm_space, 64, "xmm_space")?);
    if !fp.padding.is_empty() {
        put(&mut x, 416, &words32(&fp.padding, 24, "padding")?);
    }
    let Some(xs) = &fp.xsave else {
        return Ok(x);
    };
    if size < 576 {
        return Err("the image has XSAVE state, this machine has no XSAVE".into());
    }
    put(&mut x, 512, &xs.xstate_bv.to_le_bytes());
    for (bit, keep) in COMPONENTS {
        let bytes: Vec<u8> = match bit {
            2 => xs.ymmh_space.iter().flat_map(|w| w.to_le_bytes()).collect(),
            3 => xs
                .bndreg_state
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect(),
            4 => xs
                .bndcsr_state
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect(),
            5 => xs.opmask_reg.iter().flat_map(|w| w.to_le_bytes()).collect(),
            6 => xs.zmm_upper.iter().flat_map(|w| w.to_le_bytes()).collect(),
            7 => xs.hi16_zmm.iter().flat_map(|w| w.to_le_bytes()).collect(),
            _ => xs.pkru.iter().flat_map(|w| w.to_le_bytes()).collect(),
        };
        if bytes.is_empty() {
            continue;
        }
        if bytes.len() > keep {
            return Err(format!(
                "XSAVE component {bit}: {} bytes, at most {keep}",
                bytes.len()
            ));
        }
        match component(bit) {
            Some((off, csize)) if off + csize <= size && bytes.len() <= csize => {
                put(&mut x, off, &bytes)
            }
            _ if bytes.iter().all(|&b| b == 0) => {}
            _ => {
                return Err(format!(
                    "XSAVE component {bit} is in the image but not on this machine"
                ));
            }
        }
    }
    Ok(x)
}
