import { useCallback, useEffect, useRef, useState } from '../vendor/htm-preact-standalone.module.js';

/**
 * Loads data with `loader()` when `deps` change. Returns {data, error, ready,
 * reload}; `ready` turns true once the first load has settled (data or error),
 * which the views expose as data-ready="1".
 */
export function useData(loader, deps = []) {
  const [state, setState] = useState({ data: null, error: null, ready: false });
  const generation = useRef(0);
  const latest = useRef(loader);
  latest.current = loader;
  const reload = useCallback(async () => {
    const mine = ++generation.current;
    try {
      const data = await latest.current();
      if (mine === generation.current) setState({ data, error: null, ready: true });
    } catch (error) {
      if (mine === generation.current) {
        setState((old) => ({ data: old.data, error, ready: true }));
      }
    }
  }, []);
  useEffect(() => {
    setState({ data: null, error: null, ready: false });
    reload();
  }, deps);
  return { ...state, reload, setData: (data) => setState((old) => ({ ...old, data })) };
}
