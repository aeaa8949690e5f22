import { mount } from 'svelte';
import 'uplot/dist/uPlot.min.css';
import './ui/app.css';
import App from './ui/App.svelte';

mount(App, { target: document.getElementById('app')! });
