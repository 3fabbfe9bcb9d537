import type { ClientEvent, HushClient } from '@hush/client';
import { useCallback, useEffect, useRef, useState } from 'react';

/**
 * Loads data from the client and loads it again whenever the client reports a change that
 * `relevant` accepts (messages arriving or changing status, groups, expiry).
 */
export function useClientData<T>(
  client: HushClient,
  load: () => Promise<T>,
  relevant: (event: ClientEvent) => boolean,
): { data: T | undefined; reload: () => void; error: unknown } {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<unknown>();
  const loadRef = useRef(load);
  loadRef.current = load;
  const generation = useRef(0);

  const reload = useCallback(() => {
    const mine = ++generation.current;
    loadRef.current().then(
      (value) => {
        if (mine === generation.current) setData(value);
      },
      (e: unknown) => {
        if (mine === generation.current) setError(e);
      },
    );
  }, []);

  const relevantRef = useRef(relevant);
  relevantRef.current = relevant;
  useEffect(() => {
    reload();
    return client.on((event) => {
      if (relevantRef.current(event)) reload();
    });
  }, [client, reload]);

  return { data, reload, error };
}

/** The live connection's state, for a small banner. */
export function useConnectionState(client: HushClient): string {
  const [state, setState] = useState('connecting');
  useEffect(
    () =>
      client.on((event) => {
        if (event.type === 'connection') setState(event.state);
      }),
    [client],
  );
  return state;
}
