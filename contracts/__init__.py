"""The ground floor: contracts every stage imports (errors, ids, offsets, events, settings); imports nothing of ours."""
