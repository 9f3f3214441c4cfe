-- Wireshark dissector for rtcp, the user-space TCP over UDP (this repository, rtcp/core/wire.py).
--
-- Install: copy this file into Wireshark's personal Lua plugins folder
--   (Help > About Wireshark > Folders > Personal Lua Plugins; on Linux ~/.local/lib/wireshark/plugins/)
-- or load it for one run:  wireshark -X lua_script:contrib/wireshark/rtcp.lua capture.pcap
--                          tshark    -X lua_script:contrib/wireshark/rtcp.lua -r capture.pcap
--
-- rtcp has no fixed port, so the dissector finds its datagrams by a heuristic on UDP (version 1,
-- the unused flag bit 0x80 and the reserved field zero, the options' TLVs well formed). "Decode As..."
-- on a UDP port, or the protocol preference "UDP ports", force it. A port that another dissector
-- registered (41170, 37008, ...: 31 in Linux's ephemeral range) goes to that one before any
-- heuristic unless UDP's "Try heuristic sub-dissectors first" is on (udp.try_heuristic_first).
--
-- The display filter name is "rtcpu" ("rtcp" is Wireshark's RTP Control Protocol):
--   rtcpu.seq, rtcpu.ack, rtcpu.window, rtcpu.flags.syn, rtcpu.checksum_good == 0,
--   rtcpu.opt.sack.left, rtcpu.len, rtcpu.seq_rel ...
--
-- The header (rtcp/core/wire.py), network byte order, 28 bytes:
--   0 version(1) 1 flags(1) 2 window(2) 4 src conn id(4) 8 dst conn id(4) 12 seq(4) 16 ack(4)
--   20 options length(2) 22 reserved(2) 24 CRC-32(4) 28 options (TLV) then payload.
-- The CRC-32 (zlib's) covers bytes 0..23 and 28..end. Wireshark 4.x bundles Lua 5.2: bit32.
-- Protected datagrams (--psk-file, --code; rtcp/core/protection.py) have version 2 (sealed
-- with ChaCha20-Poly1305) or 3 (AES-256-GCM, when both ends have fast AES): the header stays
-- readable, bytes 24..27 hold the packet number (the nonce) instead of the CRC-32, and options
-- and payload are encrypted, followed by a 16-byte tag. The dissector
-- shows the header and marks the rest as encrypted; `rtcp decrypt CAPTURE --keylog FILE -o
-- PLAIN.pcap` turns a capture into plaintext datagrams with the traffic keys of --keylog.

local rtcpu = Proto("rtcpu", "rtcp: user-space TCP over UDP")

local FLAG_FIN, FLAG_SYN, FLAG_RST, FLAG_PSH, FLAG_ACK, FLAG_PROBE = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
-- a listener under a SYN flood answers statelessly with RETRY and a token (QUIC's Retry)
local FLAG_RETRY = 0x40
local UNUSED_FLAGS = 0x80
local HEADER_LEN = 28
local PROTECTED_VERSION = 2  -- ChaCha20-Poly1305
local PROTECTED_AES_VERSION = 3  -- AES-256-GCM
local function is_protected(version)
    return version == PROTECTED_VERSION or version == PROTECTED_AES_VERSION
end
local TAG_LEN = 16

local option_names = {
    [0] = "End of options",
    [1] = "No-operation",
    [2] = "Maximum segment size",
    [3] = "Window scale",
    [4] = "SACK permitted",
    [5] = "SACK",
    [8] = "Timestamps",
    [30] = "Path MTU probe acknowledged",
    [31] = "Retry token",
    [32] = "Path challenge",
    [33] = "Path response",
    [40] = "Key share (X25519)",
    [41] = "Code exchange (SPAKE2)",
    [42] = "Key proof",
    [43] = "Key rejected",
    [44] = "AEAD (offer or choice)",
}

local f = rtcpu.fields
f.version = ProtoField.uint8("rtcpu.version", "Version", base.DEC)
f.flags = ProtoField.uint8("rtcpu.flags", "Flags", base.HEX)
f.flag_fin = ProtoField.bool("rtcpu.flags.fin", "FIN", 8, nil, FLAG_FIN)
f.flag_syn = ProtoField.bool("rtcpu.flags.syn", "SYN", 8, nil, FLAG_SYN)
f.flag_rst = ProtoField.bool("rtcpu.flags.rst", "RST", 8, nil, FLAG_RST)
f.flag_psh = ProtoField.bool("rtcpu.flags.psh", "PSH", 8, nil, FLAG_PSH)
f.flag_ack = ProtoField.bool("rtcpu.flags.ack", "ACK", 8, nil, FLAG_ACK)
f.flag_probe = ProtoField.bool("rtcpu.flags.probe", "PROBE (path MTU probe)", 8, nil, FLAG_PROBE)
f.flag_retry = ProtoField.bool("rtcpu.flags.retry", "RETRY (address validation token)", 8, nil, FLAG_RETRY)
f.flags_str = ProtoField.string("rtcpu.flags.str", "Flags")
f.window = ProtoField.uint16("rtcpu.window", "Window", base.DEC)
f.src_id = ProtoField.uint32("rtcpu.src_id", "Source connection id", base.HEX)
f.dst_id = ProtoField.uint32("rtcpu.dst_id", "Destination connection id", base.HEX)
f.seq = ProtoField.uint32("rtcpu.seq", "Sequence number (raw)", base.DEC)
f.seq_rel = ProtoField.uint32("rtcpu.seq_rel", "Sequence number (relative)", base.DEC)
f.ack = ProtoField.uint32("rtcpu.ack", "Acknowledgment number (raw)", base.DEC)
f.ack_rel = ProtoField.uint32("rtcpu.ack_rel", "Acknowledgment number (relative)", base.DEC)
f.opt_len = ProtoField.uint16("rtcpu.opt_len", "Options length", base.DEC)
f.reserved = ProtoField.uint16("rtcpu.reserved", "Reserved", base.HEX)
f.checksum = ProtoField.uint32("rtcpu.checksum", "Checksum (CRC-32)", base.HEX)
f.checksum_calc = ProtoField.uint32("rtcpu.checksum_calculated", "Calculated checksum", base.HEX)
f.checksum_good = ProtoField.bool("rtcpu.checksum_good", "Checksum good")
f.len = ProtoField.uint32("rtcpu.len", "Payload length", base.DEC)
f.payload = ProtoField.bytes("rtcpu.payload", "Payload")
f.protected = ProtoField.bool("rtcpu.protected", "Encrypted (packet protection)")
f.pn = ProtoField.uint32("rtcpu.pn", "Packet number (the nonce)", base.DEC)
f.encrypted = ProtoField.bytes("rtcpu.encrypted", "Encrypted options and payload")
f.tag = ProtoField.bytes("rtcpu.tag", "Authentication tag (replaces the CRC-32)")
f.options = ProtoField.bytes("rtcpu.options", "Options")
f.opt_kind = ProtoField.uint8("rtcpu.opt.kind", "Kind", base.DEC, option_names)
f.opt_length = ProtoField.uint8("rtcpu.opt.len", "Length", base.DEC)
f.opt_mss = ProtoField.uint16("rtcpu.opt.mss", "MSS", base.DEC)
f.opt_wscale = ProtoField.uint8("rtcpu.opt.wscale", "Shift count", base.DEC)
f.opt_sack_perm = ProtoField.bool("rtcpu.opt.sack_perm", "SACK permitted")
f.opt_sack_left = ProtoField.uint32("rtcpu.opt.sack.left", "SACK left edge (raw)", base.DEC)
f.opt_sack_right = ProtoField.uint32("rtcpu.opt.sack.right", "SACK right edge (raw)", base.DEC)
f.opt_sack_left_rel = ProtoField.uint32("rtcpu.opt.sack.left_rel", "SACK left edge (relative)", base.DEC)
f.opt_sack_right_rel = ProtoField.uint32("rtcpu.opt.sack.right_rel", "SACK right edge (relative)", base.DEC)
f.opt_ts_val = ProtoField.uint32("rtcpu.opt.ts_val", "Timestamp value", base.DEC)
f.opt_ts_ecr = ProtoField.uint32("rtcpu.opt.ts_ecr", "Timestamp echo reply", base.DEC)
f.opt_pmtu_ack = ProtoField.uint16("rtcpu.opt.pmtu_ack", "Probe size acknowledged", base.DEC)
f.opt_retry_token = ProtoField.bytes("rtcpu.opt.retry_token", "Retry token")
f.opt_path_challenge = ProtoField.bytes("rtcpu.opt.path_challenge", "Path challenge data")
f.opt_path_response = ProtoField.bytes("rtcpu.opt.path_response", "Path response data")

local ef_bad_checksum = ProtoExpert.new("rtcpu.checksum.bad", "Bad checksum: the datagram was corrupted",
    expert.group.CHECKSUM, expert.severity.ERROR)
local ef_malformed = ProtoExpert.new("rtcpu.malformed", "Malformed rtcp segment",
    expert.group.MALFORMED, expert.severity.ERROR)
local ef_retransmission = ProtoExpert.new("rtcpu.analysis.retransmission",
    "This segment repeats sequence space already sent (retransmission)",
    expert.group.SEQUENCE, expert.severity.NOTE)
local ef_encrypted = ProtoExpert.new("rtcpu.encrypted.note",
    "Encrypted: decode it with rtcp decrypt CAPTURE --keylog FILE -o PLAIN.pcap",
    expert.group.DECRYPTION, expert.severity.NOTE)
rtcpu.experts = { ef_bad_checksum, ef_malformed, ef_retransmission, ef_encrypted }

rtcpu.prefs.ports = Pref.range("UDP ports", "", "UDP ports to decode as rtcp (besides the heuristic)", 65535)
rtcpu.prefs.heuristic = Pref.bool("Heuristic on UDP", true, "Find rtcp datagrams on any UDP port")

-- CRC-32 (IEEE 802.3, zlib's): reflected, polynomial 0xEDB88320, initial and final xor 0xFFFFFFFF.
local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if bit32.band(c, 1) == 1 then
            c = bit32.bxor(0xEDB88320, bit32.rshift(c, 1))
        else
            c = bit32.rshift(c, 1)
        end
    end
    crc_table[i] = c
end

local function crc32_update(crc, tvb, offset, length)
    if length <= 0 then
        return crc
    end
    local bytes = tvb:range(offset, length):bytes()
    local band, bxor, rshift = bit32.band, bit32.bxor, bit32.rshift
    for i = 0, length - 1 do
        crc = bxor(crc_table[band(bxor(crc, bytes:get_index(i)), 0xFF)], rshift(crc, 8))
    end
    return crc
end

local function crc32_of_segment(tvb)
    local crc = 0xFFFFFFFF
    crc = crc32_update(crc, tvb, 0, 24)
    crc = crc32_update(crc, tvb, HEADER_LEN, tvb:len() - HEADER_LEN)
    return bit32.bxor(crc, 0xFFFFFFFF)
end

local function flag_string(flags)
    local names = {}
    if bit32.band(flags, FLAG_SYN) ~= 0 then names[#names + 1] = "SYN" end
    if bit32.band(flags, FLAG_FIN) ~= 0 then names[#names + 1] = "FIN" end
    if bit32.band(flags, FLAG_RST) ~= 0 then names[#names + 1] = "RST" end
    if bit32.band(flags, FLAG_PSH) ~= 0 then names[#names + 1] = "PSH" end
    if bit32.band(flags, FLAG_ACK) ~= 0 then names[#names + 1] = "ACK" end
    if bit32.band(flags, FLAG_PROBE) ~= 0 then names[#names + 1] = "PROBE" end
    if bit32.band(flags, FLAG_RETRY) ~= 0 then names[#names + 1] = "RETRY" end
    if #names == 0 then return "-" end
    return table.concat(names, ", ")
end

-- Per capture: the ISN of each connection id (from its SYN) for relative numbers, and the highest
-- sequence end each connection has sent (to flag retransmissions), filled on the first pass.
-- The highest end is kept per UDP 5-tuple and connection id: a capture taken at `rtcp proxy`
-- holds every datagram twice, arriving from the client and leaving towards the server, and
-- those two legs are two conversations (keyed by connection id alone, each forwarded copy
-- looked like a retransmission of the arriving one).
local isn = {}
local highest = {}
local rel_of_frame = {}

function rtcpu.init()
    isn = {}
    highest = {}
    rel_of_frame = {}
end

local function leg_key(pinfo, src_id)
    return tostring(pinfo.src) .. ":" .. tostring(pinfo.src_port) .. ">" .. tostring(pinfo.dst)
        .. ":" .. tostring(pinfo.dst_port) .. "#" .. tostring(src_id)
end

local function rel(value, base_value)
    return (value - base_value) % 4294967296
end

-- Structure checks for the heuristic: no CRC (a corrupted datagram is still rtcp, shown as bad).
local function looks_like_rtcp(tvb)
    local n = tvb:len()
    if n < HEADER_LEN then return false end
    local version = tvb(0, 1):uint()
    if version ~= 1 and not is_protected(version) then return false end
    if bit32.band(tvb(1, 1):uint(), UNUSED_FLAGS) ~= 0 then return false end
    if tvb(22, 2):uint() ~= 0 then return false end
    local opt_len = tvb(20, 2):uint()
    if is_protected(version) then
        return HEADER_LEN + opt_len + TAG_LEN <= n  -- the options are encrypted: no TLV walk
    end
    if HEADER_LEN + opt_len > n then return false end
    local i, e = HEADER_LEN, HEADER_LEN + opt_len
    while i < e do
        local kind = tvb(i, 1):uint()
        if kind == 0 then break end
        if kind == 1 then
            i = i + 1
        else
            if i + 1 >= e then return false end
            local l = tvb(i + 1, 1):uint()
            if l < 2 or i + l > e then return false end
            i = i + l
        end
    end
    return true
end

local function add_options(tvb, pinfo, tree, opt_len, src_id, dst_id)
    local e = HEADER_LEN + opt_len
    local otree = tree:add(f.options, tvb(HEADER_LEN, opt_len))
    otree:set_text(string.format("Options: (%d bytes)", opt_len))
    local i = HEADER_LEN
    local info = {}
    while i < e do
        local kind = tvb(i, 1):uint()
        if kind == 0 then
            local t = otree:add(tvb(i, 1), "End of options")
            t:add(f.opt_kind, tvb(i, 1))
            break
        elseif kind == 1 then
            local t = otree:add(tvb(i, 1), "No-operation")
            t:add(f.opt_kind, tvb(i, 1))
            i = i + 1
        else
            if i + 1 >= e then
                otree:add_proto_expert_info(ef_malformed, "option header truncated")
                break
            end
            local l = tvb(i + 1, 1):uint()
            if l < 2 or i + l > e then
                otree:add_proto_expert_info(ef_malformed, string.format("option %d has bad length %d", kind, l))
                break
            end
            local name = option_names[kind] or string.format("Unknown option %d", kind)
            local t = otree:add(tvb(i, l), name)
            t:add(f.opt_kind, tvb(i, 1))
            t:add(f.opt_length, tvb(i + 1, 1))
            if kind == 2 and l == 4 then
                local mss = tvb(i + 2, 2):uint()
                t:add(f.opt_mss, tvb(i + 2, 2))
                t:append_text(": " .. mss .. " bytes")
                info[#info + 1] = "MSS=" .. mss
            elseif kind == 3 and l == 3 then
                local shift = tvb(i + 2, 1):uint()
                t:add(f.opt_wscale, tvb(i + 2, 1))
                t:append_text(string.format(": %d (multiply by %d)", shift, 2 ^ math.min(shift, 14)))
                info[#info + 1] = "WS=" .. math.floor(2 ^ math.min(shift, 14))
            elseif kind == 4 and l == 2 then
                t:add(f.opt_sack_perm, tvb(i, 2), true)
                info[#info + 1] = "SACK_PERM"
            elseif kind == 5 then
                if (l - 2) % 8 ~= 0 or l == 2 then
                    t:add_proto_expert_info(ef_malformed, "SACK option length is not 2 + 8n")
                else
                    local blocks = {}
                    for j = i + 2, i + l - 1, 8 do
                        local left, right = tvb(j, 4):uint(), tvb(j + 4, 4):uint()
                        t:add(f.opt_sack_left, tvb(j, 4))
                        t:add(f.opt_sack_right, tvb(j + 4, 4))
                        -- SACK blocks acknowledge the peer's sequence space: the destination's ISN.
                        local base_value = isn[dst_id]
                        if base_value ~= nil then
                            local lr, rr = rel(left, base_value), rel(right, base_value)
                            t:add(f.opt_sack_left_rel, tvb(j, 4), lr):set_generated()
                            t:add(f.opt_sack_right_rel, tvb(j + 4, 4), rr):set_generated()
                            blocks[#blocks + 1] = lr .. "-" .. rr
                        else
                            blocks[#blocks + 1] = left .. "-" .. right
                        end
                    end
                    t:append_text(": " .. table.concat(blocks, " "))
                    info[#info + 1] = "SACK=" .. table.concat(blocks, ",")
                end
            elseif kind == 8 and l == 10 then
                t:add(f.opt_ts_val, tvb(i + 2, 4))
                t:add(f.opt_ts_ecr, tvb(i + 6, 4))
                t:append_text(string.format(": TSval %d, TSecr %d", tvb(i + 2, 4):uint(), tvb(i + 6, 4):uint()))
            elseif kind == 30 and l == 4 then
                t:add(f.opt_pmtu_ack, tvb(i + 2, 2))
                t:append_text(": " .. tvb(i + 2, 2):uint() .. " bytes")
                info[#info + 1] = "PMTU_ACK=" .. tvb(i + 2, 2):uint()
            elseif kind == 31 and l > 2 then
                t:add(f.opt_retry_token, tvb(i + 2, l - 2))
                t:append_text(string.format(": %d bytes", l - 2))
                info[#info + 1] = "TOKEN"
            elseif (kind == 32 or kind == 33) and l > 2 then
                local value = tvb(i + 2, l - 2)
                local hex = string.lower(tostring(value:bytes()))
                t:add(kind == 32 and f.opt_path_challenge or f.opt_path_response, value)
                t:append_text(": " .. hex)
                info[#info + 1] = (kind == 32 and "PATH_CHALLENGE=" or "PATH_RESPONSE=") .. hex
            end
            i = i + l
        end
    end
    return info
end

local function dissect(tvb, pinfo, tree)
    local n = tvb:len()
    if n < HEADER_LEN then
        return 0
    end
    pinfo.cols.protocol:set("rtcp")
    local version = tvb(0, 1):uint()
    local flags = tvb(1, 1):uint()
    local window = tvb(2, 2):uint()
    local src_id = tvb(4, 4):uint()
    local dst_id = tvb(8, 4):uint()
    local seq = tvb(12, 4):uint()
    local ack = tvb(16, 4):uint()
    local opt_len = tvb(20, 2):uint()
    local checksum = tvb(24, 4):uint()
    local protected = is_protected(version)
    local body = HEADER_LEN + opt_len
    local payload_len = n - body - (protected and TAG_LEN or 0)
    if payload_len < 0 then payload_len = 0 end

    local syn = bit32.band(flags, FLAG_SYN) ~= 0
    local fin = bit32.band(flags, FLAG_FIN) ~= 0
    local has_ack = bit32.band(flags, FLAG_ACK) ~= 0
    local probe = bit32.band(flags, FLAG_PROBE) ~= 0

    -- relative numbers and retransmission analysis, decided once per frame on the first pass
    local state = rel_of_frame[pinfo.number]
    if state == nil then
        if syn then isn[src_id] = seq end
        state = {}
        if isn[src_id] ~= nil then state.seq_rel = rel(seq, isn[src_id]) end
        if has_ack and isn[dst_id] ~= nil then state.ack_rel = rel(ack, isn[dst_id]) end
        if state.seq_rel ~= nil and not probe then
            local used = payload_len + (syn and 1 or 0) + (fin and 1 or 0)
            if used > 0 then
                local seg_end = state.seq_rel + used
                local key = leg_key(pinfo, src_id)
                local top = highest[key]
                if top ~= nil and seg_end <= top and not (syn and top <= 1) then
                    state.retransmission = true
                end
                if top == nil or seg_end > top then highest[key] = seg_end end
                if syn and top ~= nil and top >= 1 then state.retransmission = true end
            end
        end
        rel_of_frame[pinfo.number] = state
    end

    local calc = protected and checksum or crc32_of_segment(tvb)
    local good = (calc == checksum)  -- protected: the tag checks integrity, not shown here

    local shown_seq = state.seq_rel or seq
    local shown_ack = state.ack_rel or ack
    local summary = string.format("%08x -> %08x [%s] Seq=%d", src_id, dst_id, flag_string(flags), shown_seq)
    if has_ack then summary = summary .. string.format(" Ack=%d", shown_ack) end
    summary = summary .. string.format(" Win=%d Len=%d", window, payload_len)

    local root = tree:add(rtcpu, tvb(0, n))
    root:set_text(string.format("rtcp, Src conn: %08x, Dst conn: %08x, Seq: %d, Ack: %d, Len: %d",
        src_id, dst_id, shown_seq, shown_ack, payload_len))
    root:add(f.version, tvb(0, 1))
    local ftree = root:add(f.flags, tvb(1, 1))
    ftree:append_text(" (" .. flag_string(flags) .. ")")
    ftree:add(f.flag_retry, tvb(1, 1))
    ftree:add(f.flag_probe, tvb(1, 1))
    ftree:add(f.flag_ack, tvb(1, 1))
    ftree:add(f.flag_psh, tvb(1, 1))
    ftree:add(f.flag_rst, tvb(1, 1))
    ftree:add(f.flag_syn, tvb(1, 1))
    ftree:add(f.flag_fin, tvb(1, 1))
    ftree:add(f.flags_str, tvb(1, 1), flag_string(flags)):set_generated()
    root:add(f.window, tvb(2, 2))
    root:add(f.src_id, tvb(4, 4))
    root:add(f.dst_id, tvb(8, 4))
    root:add(f.seq, tvb(12, 4))
    if state.seq_rel ~= nil then
        root:add(f.seq_rel, tvb(12, 4), state.seq_rel):set_generated()
    end
    root:add(f.ack, tvb(16, 4))
    if state.ack_rel ~= nil then
        root:add(f.ack_rel, tvb(16, 4), state.ack_rel):set_generated()
    end
    root:add(f.opt_len, tvb(20, 2))
    root:add(f.reserved, tvb(22, 2))
    if protected then
        root:add(f.protected, tvb(0, 1), true):set_generated()
        root:add(f.pn, tvb(24, 4))
    end
    local ctree = protected and root or root:add(f.checksum, tvb(24, 4))
    if protected then
        -- no CRC-32 to check: the AEAD tag covers everything
    elseif good then
        ctree:append_text(" [correct]")
    else
        ctree:append_text(string.format(" [incorrect, should be 0x%08x]", calc))
        ctree:add_proto_expert_info(ef_bad_checksum)
    end
    if not protected then
        ctree:add(f.checksum_calc, tvb(24, 4), calc):set_generated()
        ctree:add(f.checksum_good, tvb(24, 4), good):set_generated()
    end
    if version ~= 1 and not protected then
        root:add_proto_expert_info(ef_malformed, "unknown version " .. version)
    end

    local option_info = {}
    if protected then
        if n >= HEADER_LEN + TAG_LEN then
            if n > HEADER_LEN + TAG_LEN then
                root:add(f.encrypted, tvb(HEADER_LEN, n - HEADER_LEN - TAG_LEN))
            end
            root:add(f.tag, tvb(n - TAG_LEN, TAG_LEN))
        else
            root:add_proto_expert_info(ef_malformed, "shorter than its authentication tag")
        end
        root:add_proto_expert_info(ef_encrypted)
        option_info = { "[encrypted]" }
    elseif body > n then
        root:add_proto_expert_info(ef_malformed, "options run past the end of the datagram")
    elseif opt_len > 0 then
        option_info = add_options(tvb, pinfo, root, opt_len, src_id, dst_id)
    end
    root:add(f.len, tvb(0, 0), payload_len):set_generated()
    if payload_len > 0 and body <= n and not protected then
        root:add(f.payload, tvb(body, payload_len))
    end
    if state.retransmission then
        root:add_proto_expert_info(ef_retransmission)
        summary = "[Retransmission] " .. summary
    end
    if #option_info > 0 then
        summary = summary .. " " .. table.concat(option_info, " ")
    end
    if not good then
        summary = summary .. " [BAD CHECKSUM]"
    end
    pinfo.cols.info:set(summary)
    return n
end

function rtcpu.dissector(tvb, pinfo, tree)
    return dissect(tvb, pinfo, tree)
end

local function heuristic(tvb, pinfo, tree)
    if not rtcpu.prefs.heuristic then return false end
    if not looks_like_rtcp(tvb) then return false end
    dissect(tvb, pinfo, tree)
    return true
end

rtcpu:register_heuristic("udp", heuristic)

local udp_port = DissectorTable.get("udp.port")
udp_port:add_for_decode_as(rtcpu)

local registered_ports = nil
function rtcpu.prefs_changed()
    if registered_ports ~= nil then
        udp_port:remove(registered_ports, rtcpu)
    end
    registered_ports = nil
    local ports = rtcpu.prefs.ports
    if ports ~= nil and ports ~= "" then
        udp_port:add(ports, rtcpu)
        registered_ports = ports
    end
end
