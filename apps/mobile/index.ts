// First, before anything that may need randomness: crypto.getRandomValues on Hermes (a no-op on web).
import 'react-native-get-random-values';
import './src/polyfills';
import { registerRootComponent } from 'expo';
import App from './src/App';

// registerRootComponent calls AppRegistry.registerComponent('main', () => App) and sets up the
// environment for Expo Go, native builds and the web alike.
registerRootComponent(App);
