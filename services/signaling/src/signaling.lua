#!lua name=rtc_signaling
--[[ rtc-signaling's state changes, one Redis function each, so every change
that touches several keys is atomic and costs the pod one round trip.

Loaded by every pod with FUNCTION LOAD REPLACE when it connects (the source
is compiled into the binary). Keys of room R share the hash tag {R}:

  rtc:{R}:room          hash   max, empty, meta, created
  rtc:{R}:members       zset   participant -> join time (ms)
  rtc:{R}:pinfo         hash   <P> Participant (protobuf bytes, opaque here),
                               <P>:s session id, <P>:pod pod holding P's
                               stream, <P>:gen stream generation,
                               s:<S> "<P>|<identity>" of each live session
                               (the hot path checks sender and recipient
                               with one HMGET)
  rtc:{R}:sess:<S>      hash   p, id (identity), rt (resume digest), dl
                               (deadline ms), ended (reason), rw/rn (rate
                               window second / count)
  rtc:{R}:inbox:<P>     stream fields t (kind), a, b
  rtc:{R}:nego:<P1>:<P2>:o|a   string  netstrings of sender and event id,
                               then the SignalPayload (P1 < P2)
  rtc:{R}:idem:<S>:<K>  string the first answer to client_msg_id K
  rtc:rooms             zset   open room ids (score 0, paged by lex)
  rtc:deadlines         zset   "s|R|S|P" and "r|R" -> deadline ms

Event kinds in a mailbox (t, a, b):
  j joined   a = Participant
  l left     a = Participant, b = LeaveReason number
  s signal   a = sender id, b = SignalPayload
  d data     a = sender id ("" = the service), b = data
  c closed   a = reason        (last event of the mailbox)
  k kicked   a = reason        (last event of the mailbox)

Every mailbox append PUBLISHes to rtc:pod:<pod> of the pod holding the
recipient's stream: netstrings of R, P, op, id, t, a, b with op "e" (an
event), "x" (the session ended: drain and finish) or "T" (another
Subscribe took the stream over; a = its generation). Wakes for one mailbox
are published in id order, and one subscriber connection receives them in
that order, so the pod needs no more than the ids to deliver each event
once: it reads the mailbox back whenever it may have missed a wake
(attach, takeover, reconnect).

Errors are replies "<GRPC_STATUS_NAME> message", mapped to gRPC statuses
by the pod. ]]

local SESSION_GRACE_MS = 120000 -- ended sessions and mailboxes stay readable
local IDEM_TTL_MS = 600000      -- client_msg_id window (signaling.proto: 10 min)

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end


local function k_room(R) return 'rtc:{' .. R .. '}:room' end
local function k_members(R) return 'rtc:{' .. R .. '}:members' end
local function k_pinfo(R) return 'rtc:{' .. R .. '}:pinfo' end
local function k_sess(R, S) return 'rtc:{' .. R .. '}:sess:' .. S end
local function k_inbox(R, P) return 'rtc:{' .. R .. '}:inbox:' .. P end
local function dl_member(R, S, P) return 's|' .. R .. '|' .. S .. '|' .. P end
local K_ROOMS = 'rtc:rooms'
local K_DEADLINES = 'rtc:deadlines'

local function fail(status, msg) return redis.error_reply(status .. ' ' .. msg) end

-- Lengths as text without number formatting (tostring is a sprintf of
-- "%.14g", a measurable share of the hot path): small ones from a table.
-- (Built with '..': library code cannot call tostring at load time.)
local NUM = {}
for i = 0, 255 do NUM[i] = '' .. i end
local function num(n) return NUM[n] or '' .. n end

-- blen: #b as text when the caller has it (a signal's payload length comes
-- from the pod).
local function publish(R, P, pod, op, id, t, a, b, blen)
    if pod then -- one concatenation: the payload is copied once
        redis.call('PUBLISH', 'rtc:pod:' .. pod, num(#R) .. ':' .. R .. num(#P) .. ':' .. P ..
            num(#op) .. ':' .. op .. num(#id) .. ':' .. id .. num(#t) .. ':' .. t .. num(#a) ..
            ':' .. a .. (blen or num(#b)) .. ':' .. b)
    end
end

-- Append one event to P's mailbox and wake the pod holding P's stream
-- (pod: false when no stream is held, nil to look it up).
local function append(R, P, maxlen, t, a, b, pod, blen)
    if pod == nil then pod = redis.call('HGET', k_pinfo(R), P .. ':pod') end
    local id = redis.call('XADD', k_inbox(R, P), 'MAXLEN', '~', maxlen, '*', 't', t, 'a', a, 'b', b)
    publish(R, P, pod, 'e', id, t, a, b, blen)
    return id
end

local function room_settings(R)
    return redis.call('HMGET', k_room(R), 'max', 'empty', 'meta', 'created')
end

local function room_open(R) return redis.call('EXISTS', k_room(R)) == 1 end
local function not_open(R) return fail('NOT_FOUND', 'room ' .. R .. ' is not open') end

-- {max, empty, meta, created, count} or nil when the room is not open.
local function room_info(R)
    local s = room_settings(R)
    if not s[1] then return nil end
    return {s[1], s[2], s[3], s[4], redis.call('ZCARD', k_members(R))}
end

local function create_room(R, max, empty, meta, now)
    redis.call('HSET', k_room(R), 'max', max, 'empty', empty, 'meta', meta, 'created', now)
    redis.call('ZADD', K_ROOMS, 0, R)
    redis.call('ZADD', K_DEADLINES, now + tonumber(empty), 'r|' .. R)
end

-- Participants in join order, without `except`: a list of protobuf blobs.
local function participants(R, except)
    local ids = redis.call('ZRANGE', k_members(R), 0, -1)
    local out = {}
    if #ids == 0 then return out end
    -- HMGET in chunks: unpack() of thousands of ids exceeds Lua's stack.
    for from = 1, #ids, 1000 do
        local to = math.min(from + 999, #ids)
        local blobs = redis.call('HMGET', k_pinfo(R), unpack(ids, from, to))
        for i = from, to do
            local P, blob = ids[i], blobs[i - from + 1]
            if P ~= except and blob then out[#out + 1] = blob end
        end
    end
    return out
end

local function ids_except(R, except)
    local ids = redis.call('ZRANGE', k_members(R), 0, -1)
    local out = {}
    for _, P in ipairs(ids) do
        if P ~= except then out[#out + 1] = P end
    end
    return out
end

-- End P's session S: `reason` is the LeaveReason told to the others;
-- `last` (t, a) is P's own final event (kicked / closed) or nil (P's
-- stream just drains and ends). Does not close the room.
local function end_session(R, P, S, reason, maxlen, last_t, last_a, now)
    local pinfo = k_pinfo(R)
    local v = redis.call('HMGET', pinfo, P, P .. ':pod')
    local blob, pod = v[1] or '', v[2] or nil
    if last_t then
        append(R, P, maxlen, last_t, last_a, '')
    end
    publish(R, P, pod, 'x', '', '', '', '')
    redis.call('ZREM', k_members(R), P)
    redis.call('HDEL', pinfo, P, P .. ':s', P .. ':pod', P .. ':gen', 's:' .. S)
    redis.call('PEXPIRE', k_inbox(R, P), SESSION_GRACE_MS)
    local sess = k_sess(R, S)
    redis.call('HSET', sess, 'ended', reason)
    redis.call('PEXPIRE', sess, SESSION_GRACE_MS)
    redis.call('ZREM', K_DEADLINES, dl_member(R, S, P))
    if reason ~= '4' then -- ROOM_CLOSED: the others are told room_closed instead
        for _, Q in ipairs(ids_except(R, P)) do
            append(R, Q, maxlen, 'l', blob, reason)
        end
        if redis.call('ZCARD', k_members(R)) == 0 then
            local empty = tonumber(redis.call('HGET', k_room(R), 'empty') or '0')
            redis.call('ZADD', K_DEADLINES, now + empty, 'r|' .. R)
        end
    end
end

-- The live session S of R for `identity`: its hash fields, or an error.
-- `allow_ended` lets Subscribe drain an ended session.
local function session(R, S, identity, allow_ended)
    local v = redis.call('HMGET', k_sess(R, S), 'p', 'id', 'ended')
    if not v[1] then return nil, fail('NOT_FOUND', 'no such session (ended or never existed)') end
    if v[2] ~= identity then
        return nil, fail('PERMISSION_DENIED', 'the session belongs to another identity')
    end
    if v[3] and not allow_ended then return nil, fail('NOT_FOUND', 'the session has ended') end
    return v
end

-- Keep session S (participant P) alive for ttl ms from now. The hash's own
-- TTL is only a safety net: the deadline index drives expiry.
local function touch(R, S, P, ttl, now)
    local dl = now + ttl
    local sess = k_sess(R, S)
    redis.call('HSET', sess, 'dl', dl)
    redis.call('PEXPIRE', sess, ttl + SESSION_GRACE_MS)
    redis.call('ZADD', K_DEADLINES, dl, dl_member(R, S, P))
    return dl
end

local function close_room(R, reason, maxlen, now)
    for _, P in ipairs(redis.call('ZRANGE', k_members(R), 0, -1)) do
        local S = redis.call('HGET', k_pinfo(R), P .. ':s')
        if S then end_session(R, P, S, '4', maxlen, 'c', reason, now) end
    end
    redis.call('DEL', k_room(R), k_members(R), k_pinfo(R))
    redis.call('ZREM', K_ROOMS, R)
    redis.call('ZREM', K_DEADLINES, 'r|' .. R)
end

-- Rate limit: at most `limit` calls per second per session (0 = none).
local function rate_ok(R, S, limit)
    if limit <= 0 then return true end
    local sess = k_sess(R, S)
    local v = redis.call('HMGET', sess, 'rw', 'rn')
    local w = math.floor(now_ms() / 1000)
    local n = 0
    if tonumber(v[1] or '-1') == w then n = tonumber(v[2] or '0') end
    if n >= limit then return false end
    redis.call('HSET', sess, 'rw', w, 'rn', n + 1)
    return true
end

-- The hot path's session check: pinfo's s:<S> and more pinfo fields in
-- one HMGET. Returns P and the extra values, or nil and an error.
local function live(R, S, identity, ...)
    local v = redis.call('HMGET', k_pinfo(R), 's:' .. S, ...)
    if not v[1] then return nil, fail('NOT_FOUND', 'no such session (ended or never existed)') end
    local bar = string.find(v[1], '|', 1, true)
    if string.sub(v[1], bar + 1) ~= identity then
        return nil, fail('PERMISSION_DENIED', 'the session belongs to another identity')
    end
    return string.sub(v[1], 1, bar - 1), v
end

-- The cached offer ('o') or answer ('a') between P and Q.
local function nego_key(R, P, Q, kind)
    if Q < P then P, Q = Q, P end
    return 'rtc:{' .. R .. '}:nego:' .. P .. ':' .. Q .. ':' .. kind
end

-- kind: 's' (Signal) or 'b' (Broadcast): their answers differ.
local function idem_key(R, S, kind, cmid)
    return 'rtc:{' .. R .. '}:idem:' .. kind .. ':' .. S .. ':' .. cmid
end

--[[ rtc_create_room: ARGV R, max, empty_ms, meta
     -> {max, empty, meta, created, 0} ]]
local function fn_create_room(keys, a)
    local R = a[1]
    if redis.call('EXISTS', k_room(R)) == 1 then
        return fail('ALREADY_EXISTS', 'room ' .. R .. ' is already open')
    end
    local now = now_ms()
    create_room(R, a[2], a[3], a[4], now)
    return room_info(R)
end

--[[ rtc_join: ARGV R, P, S, identity, participant blob, resume digest,
     ttl, can_create (0/1), default max, default empty, maxlen,
     resume S, resume digest
     -> {resumed (0/1), P, blob, S, deadline, room info (5), others...} ]]
local function fn_join(keys, a)
    local R, P, S, identity, blob, digest = a[1], a[2], a[3], a[4], a[5], a[6]
    local ttl, can_create, maxlen = tonumber(a[7]), a[8] == '1', a[11]
    local rS, rdigest = a[12], a[13]
    local now = now_ms()
    local info = room_info(R)
    if rS ~= '' and info then
        local v = redis.call('HMGET', k_sess(R, rS), 'p', 'id', 'ended', 'rt')
        if v[1] and not v[3] and v[2] == identity and v[4] == rdigest then
            local rblob = redis.call('HGET', k_pinfo(R), v[1])
            if rblob then
                local dl = touch(R, rS, v[1], ttl, now)
                local out = {1, v[1], rblob, rS, dl}
                for _, x in ipairs(info) do out[#out + 1] = x end
                for _, x in ipairs(participants(R, v[1])) do out[#out + 1] = x end
                return out
            end
        end
    end
    if not info then
        if not can_create then return not_open(R) end
        create_room(R, a[9], a[10], '', now)
        info = room_info(R)
    end
    if tonumber(info[5]) >= tonumber(info[1]) then
        return fail('RESOURCE_EXHAUSTED', 'room ' .. R .. ' is full (' .. info[1] .. ' participants)')
    end
    for _, Q in ipairs(ids_except(R, P)) do
        append(R, Q, maxlen, 'j', blob, '')
    end
    redis.call('ZADD', k_members(R), now, P)
    redis.call('HSET', k_pinfo(R), P, blob, P .. ':s', S, 's:' .. S, P .. '|' .. identity)
    redis.call('HSET', k_sess(R, S), 'p', P, 'id', identity, 'rt', digest)
    local dl = touch(R, S, P, ttl, now)
    redis.call('ZREM', K_DEADLINES, 'r|' .. R)
    info[5] = info[5] + 1
    local out = {0, P, blob, S, dl}
    for _, x in ipairs(info) do out[#out + 1] = x end
    for _, x in ipairs(participants(R, P)) do out[#out + 1] = x end
    return out
end

--[[ rtc_leave: ARGV R, S, identity, maxlen -> 1 (0: already ended) ]]
local function fn_leave(keys, a)
    local R, S = a[1], a[2]
    local v = redis.call('HMGET', k_sess(R, S), 'p', 'id', 'ended')
    if not v[1] then return 0 end
    if v[2] ~= a[3] then return fail('PERMISSION_DENIED', 'the session belongs to another identity') end
    if v[3] then return 0 end
    end_session(R, v[1], S, '1', a[4], nil, nil, now_ms())
    return 1
end

-- One signal: {event id, dup (0/1)} or an error reply.
local function signal(R, S, identity, to, payload, plen, nego, cmid, nego_ttl, rate, maxlen)
    local P, m = live(R, S, identity, to .. ':s', to .. ':pod')
    if not P then return m end
    local ik
    if cmid ~= '' then
        ik = idem_key(R, S, 's', cmid)
        local prev = redis.call('GET', ik)
        if prev then return {prev, 1} end
    end
    if to == P then return fail('INVALID_ARGUMENT', 'cannot signal yourself') end
    if not m[2] then
        return fail('NOT_FOUND', 'participant ' .. to .. ' is not in the room')
    end
    if not rate_ok(R, S, tonumber(rate)) then
        return fail('RESOURCE_EXHAUSTED', 'rate limit: ' .. rate .. ' messages per second')
    end
    local id = append(R, to, maxlen, 's', P, payload, m[3], plen)
    if nego ~= '' then
        redis.call('SET', nego_key(R, P, to, nego), num(#P) .. ':' .. P .. num(#id) .. ':' .. id .. payload,
            'PX', nego_ttl)
    end
    if ik then redis.call('SET', ik, id, 'PX', IDEM_TTL_MS) end
    return {id, 0}
end

--[[ rtc_signals: the Signal calls a pod received in one loop iteration,
     in order. ARGV nego ttl, rate limit, maxlen, then 8 per signal: R, S,
     identity, to, payload, its length as text, nego ('o', 'a' or ''),
     client_msg_id
     -> one result per signal: {event id, dup (0/1)} or an error ]]
local function fn_signals(keys, a)
    local out = {}
    for i = 4, #a - 7, 8 do
        out[#out + 1] = signal(a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], a[i + 6],
            a[i + 7], a[1], a[2], a[3])
    end
    return out
end

--[[ rtc_broadcast: ARGV R, S, identity, data, client_msg_id, rate limit,
     maxlen -> {recipients, dup (0/1)} ]]
local function fn_broadcast(keys, a)
    local R, S, identity, data, cmid = a[1], a[2], a[3], a[4], a[5]
    local P, err = live(R, S, identity)
    if not P then return err end
    local ik
    if cmid ~= '' then
        ik = idem_key(R, S, 'b', cmid)
        local prev = redis.call('GET', ik)
        if prev then return {tonumber(prev), 1} end
    end
    if not rate_ok(R, S, tonumber(a[6])) then
        return fail('RESOURCE_EXHAUSTED', 'rate limit: ' .. a[6] .. ' messages per second')
    end
    local n = 0
    for _, Q in ipairs(ids_except(R, P)) do
        append(R, Q, a[7], 'd', P, data)
        n = n + 1
    end
    if ik then redis.call('SET', ik, n, 'PX', IDEM_TTL_MS) end
    return {n, 0}
end

--[[ rtc_heartbeat: ARGV R, S, identity, ttl -> deadline ms ]]
local function fn_heartbeat(keys, a)
    local v, err = session(a[1], a[2], a[3], false)
    if not v then return err end
    return touch(a[1], a[2], v[1], tonumber(a[4]), now_ms())
end

local function older(x, y) -- stream id x < y
    local xm, xs = string.match(x, '^(%d+)-(%d+)$')
    local ym, ys = string.match(y, '^(%d+)-(%d+)$')
    xm, xs, ym, ys = tonumber(xm), tonumber(xs), tonumber(ym), tonumber(ys)
    return xm < ym or (xm == ym and xs < ys)
end

-- True when events after `after` may have been trimmed (MAXLEN) from the
-- mailbox: something was dropped and `after` is older than the first entry
-- kept (conservatively also when exactly `after` was the last one dropped).
local function dropped_after(inbox, after)
    if after == '' or redis.call('EXISTS', inbox) == 0 then return false end
    local info, f = redis.call('XINFO', 'STREAM', inbox), {}
    for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
    local first = f['first-entry']
    return tonumber(f['entries-added']) > tonumber(f['length']) and first ~= nil and
        first ~= false and older(after, first[1])
end

-- XRANGE after `after` ('' = from the start). Nothing follows the largest
-- id (and '(' before it would be an error).
local MAX_ID = '18446744073709551615-18446744073709551615'
local function entries_after(inbox, after, count)
    if after == MAX_ID then return {} end
    local start = '-'
    if after ~= '' then start = '(' .. after end
    return redis.call('XRANGE', inbox, start, '+', 'COUNT', count)
end

local function out_of_range(after)
    return fail('OUT_OF_RANGE', 'events after ' .. after .. ' were dropped from the mailbox: join again')
end

--[[ rtc_read (a stream reading its mailbox back): ARGV R, P, after ('' =
     from the start), count -> XRANGE entries, or OUT_OF_RANGE when events
     after `after` were trimmed away meanwhile (a client too slow for its
     mailbox) ]]
local function fn_read(keys, a)
    local inbox = k_inbox(a[1], a[2])
    if dropped_after(inbox, a[3]) then return out_of_range(a[3]) end
    return entries_after(inbox, a[3], a[4])
end

--[[ rtc_attach (Subscribe): ARGV R, S, identity, pod, after id ('' =
     from the start), ttl, count
     -> {P, generation, ended (0/1), entries of XRANGE} ]]
local function fn_attach(keys, a)
    local R, S, identity, pod, after = a[1], a[2], a[3], a[4], a[5]
    local v, err = session(R, S, identity, true)
    if not v then return err end
    local P, ended = v[1], v[3] and 1 or 0
    local inbox = k_inbox(R, P)
    if dropped_after(inbox, after) then return out_of_range(after) end
    local gen = 0
    if ended == 0 then
        local pinfo = k_pinfo(R)
        local old = redis.call('HGET', pinfo, P .. ':pod')
        gen = redis.call('HINCRBY', pinfo, P .. ':gen', 1)
        redis.call('HSET', pinfo, P .. ':pod', pod)
        if old and old ~= pod then publish(R, P, old, 'T', '', '', tostring(gen), '') end
        touch(R, S, P, tonumber(a[6]), now_ms())
    end
    return {P, gen, ended, entries_after(inbox, after, a[7])}
end

--[[ rtc_touch (streams held by a pod): ARGV ttl, then R, S pairs
     -> per session 0 (ended) or its stream generation (a stream with an
     older one was taken over, even if the takeover wake was lost) ]]
local function fn_touch(keys, a)
    local ttl, now, out = tonumber(a[1]), now_ms(), {}
    for i = 2, #a - 1, 2 do
        local R, S = a[i], a[i + 1]
        local v = redis.call('HMGET', k_sess(R, S), 'p', 'ended')
        if v[1] and not v[2] then
            touch(R, S, v[1], ttl, now)
            out[#out + 1] = tonumber(redis.call('HGET', k_pinfo(R), v[1] .. ':gen') or '0')
        else
            out[#out + 1] = 0
        end
    end
    return out
end

--[[ rtc_negotiation: ARGV R, S, identity, peer
     -> {offer, answer} as stored by signal() (false when absent) ]]
local function fn_negotiation(keys, a)
    local R, S, identity, peer = a[1], a[2], a[3], a[4]
    local v, err = session(R, S, identity, false)
    if not v then return err end
    local P = v[1]
    if not redis.call('ZSCORE', k_members(R), peer) then
        return fail('NOT_FOUND', 'participant ' .. peer .. ' is not in the room')
    end
    return redis.call('MGET', nego_key(R, P, peer, 'o'), nego_key(R, P, peer, 'a'))
end

--[[ rtc_get_room: ARGV R -> room info ]]
local function fn_get_room(keys, a)
    local info = room_info(a[1])
    if not info then return not_open(a[1]) end
    return info
end

--[[ rtc_list_rooms: ARGV after ('' = first), count
     -> {R1, info1 (5)..., more (0/1)} flattened: R, max, empty, meta, created, count ]]
local function fn_list_rooms(keys, a)
    local start = '-'
    if a[1] ~= '' then start = '(' .. a[1] end
    local n = tonumber(a[2])
    local ids = redis.call('ZRANGE', K_ROOMS, start, '+', 'BYLEX', 'LIMIT', 0, n + 1)
    local out = {#ids > n and 1 or 0}
    for i = 1, math.min(#ids, n) do
        local info = room_info(ids[i])
        if info then
            out[#out + 1] = ids[i]
            for _, x in ipairs(info) do out[#out + 1] = x end
        end
    end
    return out
end

--[[ rtc_list_participants: ARGV R -> blobs in join order ]]
local function fn_list_participants(keys, a)
    if not room_open(a[1]) then return not_open(a[1]) end
    return participants(a[1], nil)
end

--[[ rtc_close_room: ARGV R, reason, maxlen -> 1 ]]
local function fn_close_room(keys, a)
    if not room_open(a[1]) then return not_open(a[1]) end
    close_room(a[1], a[2], a[3], now_ms())
    return 1
end

--[[ rtc_remove: ARGV R, P, reason, maxlen -> 1 ]]
local function fn_remove(keys, a)
    local R, P = a[1], a[2]
    if not room_open(R) then return not_open(R) end
    local S = redis.call('HGET', k_pinfo(R), P .. ':s')
    if not S then return fail('NOT_FOUND', 'participant ' .. P .. ' is not in the room') end
    end_session(R, P, S, '3', a[4], 'k', a[3], now_ms())
    return 1
end

--[[ rtc_send_data: ARGV R, to ('' = everyone), data, maxlen -> recipients ]]
local function fn_send_data(keys, a)
    local R, to = a[1], a[2]
    if not room_open(R) then return not_open(R) end
    local ids
    if to ~= '' then
        if not redis.call('ZSCORE', k_members(R), to) then
            return fail('NOT_FOUND', 'participant ' .. to .. ' is not in the room')
        end
        ids = {to}
    else
        ids = ids_except(R, nil)
    end
    for _, Q in ipairs(ids) do append(R, Q, a[4], 'd', '', a[3]) end
    return #ids
end

--[[ rtc_sweep: ARGV limit, maxlen -> {sessions expired, rooms closed}.
     Every pod may run it at once: each due entry is re-checked here, so
     each expiry happens exactly once. ]]
local function fn_sweep(keys, a)
    local now = now_ms()
    local due = redis.call('ZRANGE', K_DEADLINES, '-inf', now, 'BYSCORE', 'LIMIT', 0, a[1])
    local sessions, rooms = 0, 0
    for _, m in ipairs(due) do
        local kind, R, S, P = string.match(m, '^(%a)|([^|]+)|?([^|]*)|?(.*)$')
        if kind == 's' then
            local v = redis.call('HMGET', k_sess(R, S), 'ended', 'dl')
            -- A session hash gone with its safety-net TTL (no pod swept for
            -- that long) still ends: P is in the index entry.
            local live = not v[1] and redis.call('HGET', k_pinfo(R), P .. ':s') == S
            if live and tonumber(v[2] or '0') <= now then
                end_session(R, P, S, '2', a[2], nil, nil, now)
                sessions = sessions + 1
            else
                redis.call('ZREM', K_DEADLINES, m)
            end
        elseif kind == 'r' then
            if redis.call('EXISTS', k_room(R)) == 1 and redis.call('ZCARD', k_members(R)) == 0 then
                close_room(R, 'empty', a[2], now)
                rooms = rooms + 1
            end
            redis.call('ZREM', K_DEADLINES, m)
        else
            redis.call('ZREM', K_DEADLINES, m)
        end
    end
    return {sessions, rooms}
end

local function reg(name, fn, ro)
    local flags = {}
    if ro then flags = {'no-writes'} end
    redis.register_function{function_name = name, callback = fn, flags = flags}
end

reg('rtc_create_room', fn_create_room)
reg('rtc_join', fn_join)
reg('rtc_leave', fn_leave)
reg('rtc_signals', fn_signals)
reg('rtc_broadcast', fn_broadcast)
reg('rtc_heartbeat', fn_heartbeat)
reg('rtc_attach', fn_attach)
reg('rtc_touch', fn_touch)
reg('rtc_read', fn_read, true)
reg('rtc_negotiation', fn_negotiation, true)
reg('rtc_get_room', fn_get_room, true)
reg('rtc_list_rooms', fn_list_rooms, true)
reg('rtc_list_participants', fn_list_participants, true)
reg('rtc_close_room', fn_close_room)
reg('rtc_remove', fn_remove)
reg('rtc_send_data', fn_send_data)
reg('rtc_sweep', fn_sweep)
